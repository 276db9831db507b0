// The fuzzing harness (scripts/fuzz/fuzz.sh builds and runs it). libFuzzer hands it inputs;
// the first byte picks the entry point, the rest is the input. Everything a viewer or a
// record can reach is driven: the record parser in each format (the CloudFront default
// layout, a layout with `cs-headers` and CloudFront's native `cmcd-*` fields, JSON records,
// CMCD event lines), every CMCD transmission form, the JSON parser, the rules and
// configuration loaders (operators' files: a bad one must get an error, not a crash), the
// detection engine over whatever samples come out, and the InfluxDB points and finding
// JSON made from them. AddressSanitizer turns any read or write out of bounds into a crash,
// libFuzzer's `-timeout` a hang, and `-malloc_limit_mb` an allocation without bound.
import CMCD
import CMCDDetection
import CMCDRecords
import Glibc
import SentinelConfig
import SentinelInflux
import SentinelJSON

// One parser per format and one engine, kept across inputs so that what earlier inputs built
// (sessions, open episodes, the string caches, reused payload storage) meets later ones.
nonisolated(unsafe) var cloudfront = RecordParser()
nonisolated(unsafe) var extended = RecordParser(
    configuration: .init(
        format: .cloudfront,
        fields: try! CloudFrontFields([
            "timestamp(ms)", "c-ip", "sc-status", "cs-uri-stem", "x-edge-location", "time-taken", "cs-uri-query", "cs-headers",
            "cmcd-buffer-length", "cmcd-session-id", "cmcd-content-id", "cmcd-object-type", "cmcd-buffer-starvation",
            "cmcd-startup", "cmcd-version", "cmcd-next-object-request",
        ])))
nonisolated(unsafe) var json = RecordParser(configuration: .init(format: .json))
nonisolated(unsafe) var events = RecordParser(configuration: .init(format: .cmcd))
nonisolated(unsafe) var engine = DetectionEngine()
nonisolated(unsafe) var findings: [Finding] = []
nonisolated(unsafe) var points: [UInt8] = []
nonisolated(unsafe) var inputs = 0

/// A sample goes where the daemon sends it: the engine, and an InfluxDB point; its lazily
/// built views are asked for too.
func handle(_ outcome: consuming RecordOutcome) {
    guard case .sample(let sample) = outcome else { return }
    engine.process(sample, into: &findings)
    points.removeAll(keepingCapacity: true)
    InfluxPoints.append(sample, to: &points)
    _ = sample.cmcd.entries
    _ = sample.cmcd.ignored
    _ = sample.sessionID
    _ = sample.contentID
}

/// Calls `body` with each line of `input` in an allocation of its own, exactly as long as the
/// line, so that AddressSanitizer catches a read past a line's end (within one message it
/// would land in the next line, unnoticed).
func eachLine(_ input: UnsafeBufferPointer<UInt8>, _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
    for line in input.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
        let copy = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: line.count)
        _ = copy.initialize(from: line)
        body(UnsafeBufferPointer(copy))
        copy.deallocate()
    }
}

func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size > 0 else { return 0 }
    // libFuzzer's copy of the input is exactly as long as the input: a byte past it is caught.
    let input = UnsafeBufferPointer(start: data + 1, count: size - 1)
    let text = String(decoding: input, as: UTF8.self)
    switch data[0] % 10 {
    case 0: cloudfront.parse(message: input) { handle($0) }
    case 1: eachLine(input) { line in cloudfront.parse(line: line) { handle($0) } }
    case 2: eachLine(input) { line in extended.parse(line: line) { handle($0) } }
    case 3: eachLine(input) { line in json.parse(line: line) { handle($0) } }
    case 4: eachLine(input) { line in events.parse(line: line) { handle($0) } }
    case 5:
        var buffers = CMCDDecoder.DecodingBuffers()
        _ = try? CMCDDecoder.decodeQuery(bytes: input, allowBareValue: true, typedOnly: true, buffers: &buffers)
        _ = try? CMCDDecoder.decodeQuery(bytes: input, allowBareValue: true, typedOnly: false, buffers: &buffers)
        _ = try? CMCDPayload(rawBytes: input)
        _ = try? CMCDPayload(typedFrom: input)
    case 6:
        _ = try? CMCDDecoder.decodeHeaderLines(text)
        _ = try? CMCDDecoder.decodeBody(text)
        var buffers = CMCDDecoder.DecodingBuffers()
        _ = try? CMCDDecoder.decodeCloudFrontHeaders(bytes: input, buffers: &buffers)
    case 7:
        _ = try? CMCDDecoder.decodeJSON(text: text)
        _ = try? JSONParser.parse(bytes: input)
    case 8:
        _ = try? DetectionRules.parse(yaml: text, file: "fuzz.yaml")
    default:
        _ = try? SentinelConfiguration.load(yaml: text, file: "fuzz.yaml", environment: [:])
    }
    for finding in findings {
        _ = finding.jsonLine
        InfluxPoints.append(finding, to: &points)
    }
    findings.removeAll(keepingCapacity: true)
    inputs += 1
    // Now and then the clock moves on, as the daemon's idle timer does: eviction, stuck startups.
    if inputs % 5000 == 0 {
        engine.advance(to: 1_700_000_000_000 + Int64(inputs) * 1000, into: &findings)
        findings.removeAll(keepingCapacity: true)
    }
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { fuzzOne($0, $1) })
