import CMCDDetection
import CMCDRecords
import SentinelInflux

#if canImport(Glibc)
import Glibc
#endif

/// Parse+detect throughput on one core, and resident memory per live session.
func coreBenchmark(recordCount: Int, sessionCount: Int) {
    print("processor:      \(processorDescription())")

    // Memory per live session, measured first on a fresh heap: many sessions, each fed six
    // requests (a realistic window), lines generated on the fly so nothing else grows.
    do {
        let sessions = 200_000
        var generator = LineGenerator(sessions: sessions)
        var parser = RecordParser()
        var findings: [Finding] = []
        findings.reserveCapacity(64)
        var engine = DetectionEngine()
        let rssBefore = residentBytes()
        for _ in 0..<(sessions * 6) {
            generator.next().withUnsafeBufferPointer {
                parser.parse(line: $0) { if case .sample(let s) = $0 { engine.process(s, into: &findings) } }
            }
            findings.removeAll(keepingCapacity: true)
        }
        let rssAfter = residentBytes()
        print("memory:         \(engine.liveSessionCount) live sessions, \((rssAfter - rssBefore) / max(engine.liveSessionCount, 1)) resident bytes per live session")
        // What a daemon's checkpoint of these sessions costs (saved with commits, restored on assignment).
        let encodeStart = nowNanoseconds()
        let checkpoint = engine.checkpoint()
        let encodeSeconds = Double(nowNanoseconds() - encodeStart) / 1e9
        let restoreStart = nowNanoseconds()
        let restored = try? DetectionEngine(checkpoint: checkpoint)
        let restoreSeconds = Double(nowNanoseconds() - restoreStart) / 1e9
        print(
            "checkpoint:     \(checkpoint.count / max(engine.liveSessionCount, 1)) bytes per live session, \(String(format: "%.0f", encodeSeconds * 1000)) ms to write and \(String(format: "%.0f", restoreSeconds * 1000)) ms to restore \(restored?.liveSessionCount ?? 0) sessions")
        withExtendedLifetime(engine) {}
    }

    print("sentinel-bench: generating \(recordCount) CloudFront lines for \(sessionCount) interleaved sessions...")
    var generator = LineGenerator(sessions: sessionCount)
    // One buffer, as a consumer receives message payloads (not an array per line, whose
    // reference counting would be measured with the parser).
    var lines = PackedLines()
    for _ in 0..<recordCount { lines.append(generator.next()) }
    let totalBytes = lines.bytes.count
    print("  average line: \(totalBytes / lines.count) bytes")

    // Each figure is taken over several passes, each over all the lines with a fresh parser
    // and engine: on a shared machine one pass can be slowed by a third by other work on the
    // host, so the median and the spread say more than any single pass. Parse only and parse
    // + detect take turns, so that both figures see the same conditions on the host.
    let passes = 5
    var parseRates: [Double] = []
    var detectRates: [Double] = []
    var cohortRates: [Double] = []
    var cohortFindingCount = 0
    var samples = 0
    var findingCount = 0
    var liveSessions = 0
    for _ in 0..<passes {
        // 1. Parse only.
        do {
            var parser = RecordParser()
            samples = 0
            let start = nowNanoseconds()
            lines.forEach { parser.parse(line: $0) { if case .sample = $0 { samples += 1 } } }
            parseRates.append(Double(lines.count) / (Double(nowNanoseconds() - start) / 1e9))
        }
        // 2. Parse + detect, one core; 3. the same with the cohort windows, as `detect` and
        // the daemon run them.
        let engineOnly = detectPass(withCohorts: false)
        detectRates.append(engineOnly.rate)
        (findingCount, liveSessions) = (engineOnly.findings, engineOnly.liveSessions)
        let withCohorts = detectPass(withCohorts: true)
        cohortRates.append(withCohorts.rate)
        cohortFindingCount = withCohorts.findings
    }
    /// One pass over all the lines with a fresh parser and engine (and cohort tracker).
    func detectPass(withCohorts: Bool) -> (rate: Double, findings: Int, liveSessions: Int) {
        var parser = RecordParser()
        var engine = DetectionEngine()
        var cohorts = CohortTracker(rules: engine.rules)
        let lateness = engine.rules.sessions.reorderToleranceMs
        var findings: [Finding] = []
        var count = 0
        let start = nowNanoseconds()
        lines.forEach { line in
            parser.parse(line: line) { outcome in
                guard case .sample(let sample) = outcome else { return }
                engine.process(sample, into: &findings)
                if withCohorts {
                    cohorts.observe(sample, engine.lastObservation, into: &findings)
                    cohorts.advance(to: engine.watermark &- lateness, into: &findings)
                }
            }
            count += findings.count
            findings.removeAll(keepingCapacity: true)
        }
        return (Double(lines.count) / (Double(nowNanoseconds() - start) / 1e9), count, engine.liveSessionCount)
    }
    let parseMedian = PassRates(parseRates).median
    print("parse only:     \(PassRates(parseRates)) (\(samples) samples, \(String(format: "%.1f", parseMedian * Double(totalBytes) / Double(lines.count) / 1e6)) MB/s at the median)")
    print("parse + detect: \(PassRates(detectRates)) on one core (\(findingCount) findings, \(liveSessions) live sessions)")
    print("  with cohorts: \(PassRates(cohortRates)) on one core (\(cohortFindingCount) findings; the work of `cmcd-sentinel detect`)")

    // 3. The InfluxDB points the daemon writes for each request (`cloudfront_logs`), formatted
    // on the consumer's thread: parsed once, then only the formatting is timed.
    var requests: [Sample] = []
    requests.reserveCapacity(200_000)
    var parser = RecordParser()
    lines.forEach { line in
        if requests.count < 200_000 { parser.parse(line: line) { if case .sample(let s) = $0 { requests.append(s) } } }
    }
    // Written as the InfluxDB writer writes them: through a pointer into reserved room.
    var pointRates: [Double] = []
    let capacity = requests.count * 512 + InfluxPoints.maxRequestPointBytes
    let room = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
    defer { room.deallocate() }
    room.initialize(repeating: 0, count: capacity)
    var written = 0
    for _ in 0..<passes {
        written = 0
        var pointsWritten = 0
        let start = nowNanoseconds()
        for sample in requests where written + InfluxPoints.maxRequestPointBytes <= capacity {
            written += InfluxPoints.write(sample, at: room + written)
            pointsWritten += 1
        }
        pointRates.append(Double(pointsWritten) / (Double(nowNanoseconds() - start) / 1e9))
    }
    print("influx points:  \(PassRates(pointRates).described(unit: "request points/s")), \(written / max(requests.count, 1)) bytes each")
}

/// Records per second over several passes, printed as the median with the spread.
struct PassRates: CustomStringConvertible {
    let sorted: [Double]
    init(_ rates: [Double]) { sorted = rates.sorted() }
    var median: Double { sorted[sorted.count / 2] }
    var description: String { described(unit: "records/s") }
    func described(unit: String) -> String {
        "\(Int(median)) \(unit) median of \(sorted.count) passes (slowest \(Int(sorted.first!)), fastest \(Int(sorted.last!)))"
    }
}
