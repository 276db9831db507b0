import Foundation
import SentinelJSON
import SentinelTestSupport
import Testing

/// Runs the real `cmcd-sentinel` binary, as users do.
@Suite(.ownThread) struct CLITests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var binary: URL { sentinelBinary }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
        var lines: [String] { stdout.split(separator: "\n").map(String.init) }
    }

    func run(_ arguments: [String], stdin: String? = nil) throws -> Result {
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = arguments
        process.currentDirectoryURL = Self.root
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let input = Pipe()
        process.standardInput = input
        try process.run()
        // Feed standard input on its own thread while the output is read, so neither side
        // can fill a pipe and wait for the other.
        let writer = input.fileHandleForWriting
        let data = Data((stdin ?? "").utf8)
        let fed = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            if !data.isEmpty { try? writer.write(contentsOf: data) }
            try? writer.close()
            fed.signal()
        }
        let errorReader = ErrorReader(err.fileHandleForReading)
        let stdoutData = out.fileHandleForReading.readDataToEndOfFile()
        let stderrData = errorReader.wait()
        fed.wait()
        process.waitUntilExit()
        return Result(
            status: process.terminationStatus, stdout: String(decoding: stdoutData, as: UTF8.self),
            stderr: String(decoding: stderrData, as: UTF8.self))
    }

    @Test(arguments: [
        (["decode", "--form", "query", "https://a.example/s.ts?CMCD=bl%3D21300%2Cbs%2Cot%3Dav%2Csid%3D%22x%22"], #"{"bl":21300,"bs":true,"ot":"av","sid":"x"}"#),
        (["decode", "--form", "raw", #"br=(5000;v 320;a),nor=("a" "b";r="0-99"),v=2"#], #"{"br":[{"value":5000,"params":{"v":true}},{"value":320,"params":{"a":true}}],"nor":["a",{"value":"b","params":{"r":"0-99"}}],"v":2}"#),
        (["decode", "--form", "header", "CMCD-Request: bl=100\ncmcd-session: sid=\"s\""], #"{"bl":100,"sid":"s"}"#),
        (["decode", "--form", "json", #"{"bs":true,"rtp":15000,"sid":"6e2f"}"#], #"{"bs":true,"rtp":15000,"sid":"6e2f"}"#),
        (["decode", "--form", "body", "e=t,ts=1,v=2\n  e=ps,sta=p,v=2  "], #"[{"e":"t","ts":1,"v":2},{"e":"ps","sta":"p","v":2}]"#),
        (["decode", "CMCD=su%2Cpr%3D1.5"], #"{"su":true,"pr":1.5}"#),
    ])
    func decodePrintsOneJSONValue(arguments: [String], expected: String) throws {
        let result = try run(arguments)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == expected + "\n")
    }

    @Test func decodeReadsStandardInputAndWarnsAboutIgnoredKeys() throws {
        let result = try run(["decode", "--form", "raw", "-"], stdin: #"bl="x",sid="s""# + "\n")
        #expect(result.status == 0)
        #expect(result.stdout == #"{"bl":"x","sid":"s"}"# + "\n")
        #expect(result.stderr.contains("ignored key bl"))
    }

    @Test(arguments: [["decode", "--form", "raw", "sid=\"open"], ["decode", "--form", "query", "a=1&b=2"], ["decode", "--form", "raw", "v=3"]])
    func undecodableInputFailsWithOneLine(arguments: [String]) throws {
        let result = try run(arguments)
        #expect(result.status == 1)
        #expect(result.stdout.isEmpty)
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(result.stderr.hasPrefix("cmcd-sentinel: decode: "))
    }

    @Test func badArgumentsExitTwo() throws {
        #expect(try run(["decode", "--form", "smoke", "x"]).status == 2)
        #expect(try run(["detect", "--format", "xml"]).status == 2)
        let fields = try run(["detect", "--fields", "timestamp,cs-uri-querry", "samples/demo-sessions.tsv"])
        #expect(fields.status == 2)
        #expect(fields.stderr.contains("cs-uri-querry"))
        #expect(try run(["--help"]).status == 0)
    }

    /// One record dated a day ahead in the middle of the stream changes no finding (issue 25).
    @Test func aRecordDatedADayAheadChangesNothing() throws {
        let clean = try run(["detect", "samples/demo-sessions.tsv"])
        var lines = try String(contentsOfFile: "samples/demo-sessions.tsv", encoding: .utf8).split(separator: "\n").map(String.init)
        // A copy of a viewer's request, dated a day ahead.
        var fields = lines[5].split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        fields[0] = String(format: "%.3f", Double(fields[0])! + 86_400)
        let poisoned = fields.joined(separator: "\t")
        lines.insert(poisoned, at: 30)
        let result = try run(["detect", "-"], stdin: lines.joined(separator: "\n") + "\n")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.lines == clean.lines)
        #expect(result.stderr.contains("1 future_timestamp"), "\(result.stderr)")
    }

    @Test func detectOverTheDemoDataFindsEveryKindOfProblem() throws {
        let result = try run(["detect", "samples/demo-sessions.tsv"])
        #expect(result.status == 0, "\(result.stderr)")
        let findings = try result.lines.map { try JSONParser.parse($0) }
        func count(_ type: String, _ severity: String, _ status: String) -> Int {
            findings.filter { $0["type"] == .string(type) && $0["severity"] == .string(severity) && $0["status"] == .string(status) }.count
        }
        #expect(findings.count == 14)
        #expect(count("buffer_drop", "critical", "firing") == 2)
        #expect(count("buffer_drop", "warning", "firing") == 2)
        #expect(count("buffer_starvation", "critical", "firing") == 1)
        #expect(count("startup_delay", "critical", "firing") == 1)
        #expect(count("startup_delay", "warning", "firing") == 1)
        #expect(findings.filter { $0["status"] == .string("firing") }.count == findings.filter { $0["status"] == .string("resolved") }.count + 2)
        let stuck = findings.first { $0["session_id"] == .string("viewer-stuck-0005") }
        #expect(stuck?["details"]?["stuck"] == .bool(true))
        let drop = findings.first { $0["session_id"] == .string("viewer-drop-0002") }
        #expect(drop?["details"]?["drop_percent"] == .double(85.7))
        #expect(drop?["edge_location"] == .string("FRA56-P3"))
        #expect(result.stderr.contains("records: 64 read, 62 with CMCD, 2 skipped"))
        #expect(result.stderr.contains("0 future_timestamp"))
        #expect(result.stderr.contains("skipped field_count: 1"))
        #expect(result.stderr.contains("skipped no_cmcd: 1"))
        #expect(result.stderr.contains("sessions: 6 seen"))
    }

    @Test func detectFromStandardInputMatchesDetectFromAFile() throws {
        let text = try String(contentsOf: Self.root.appendingPathComponent("samples/demo-sessions.tsv"), encoding: .utf8)
        let fromStdin = try run(["detect", "-"], stdin: text)
        let fromFile = try run(["detect", "samples/demo-sessions.tsv"])
        #expect(fromStdin.status == 0)
        #expect(fromStdin.stdout == fromFile.stdout)
    }

    @Test func detectWithOtherFormatsAndRules() throws {
        let events = """
            cid="c",e=ps,sid="ev1",sta=s,su,ts=1764752400000,v=2
            bl=(6000),e=t,msd=6100,sid="ev1",sta=p,ts=1764752407000,v=2
            """
        let result = try run(["detect", "--format", "cmcd", "--rules", "rules/default.yaml"], stdin: events)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.lines.count >= 2)
        #expect(result.lines.allSatisfy { $0.contains(#""type":"startup_delay""#) })
        let json = try run(["detect", "--format", "json"], stdin: #"{"timestamp":1720015641207,"sid":"j","ot":"v","bl":0,"bs":true}"# + "\n")
        #expect(json.status == 0)
        #expect(json.stdout.contains(#""buffer_starvation""#))
    }

    @Test func overlongLinesAreCountedNotFatal() throws {
        let long = String(repeating: "x", count: 300_000)
        let result = try run(["detect", "--max-line-bytes", "1024", "-"], stdin: long + "\n" + long)
        #expect(result.status == 0)
        #expect(result.stderr.contains("skipped line_too_long: 2"))
    }

    /// `lines` (every third with a CRLF end, the last without a newline) through `detect`
    /// from a file and from a pipe: the same findings and the same counts.
    func fileAndPipe(_ lines: [String]) throws -> (file: Result, pipe: Result) {
        let text = lines.enumerated().map { $0.offset % 3 == 0 ? $0.element + "\r" : $0.element }.joined(separator: "\n")
        let file = TestScratch.directory.appendingPathComponent("detect-\(UUID().uuidString).tsv")
        try text.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let fromFile = try run(["detect", "--max-line-bytes", "2048", file.path])
        let fromPipe = try run(["detect", "--max-line-bytes", "2048", "-"], stdin: text)
        #expect(fromFile.status == 0)
        #expect(fromFile.stdout == fromPipe.stdout)
        #expect(fromFile.stderr == fromPipe.stderr)
        #expect(fromFile.stdout.contains(#""buffer_drop""#))
        return (fromFile, fromPipe)
    }

    /// A regular file is read through a mapping: the same lines, the same counts as a pipe
    /// (CRLF line ends, an over-long line, a last line without a newline).
    @Test func aFileGivesWhatThePipeGives() throws {
        let demo = try String(contentsOf: packageRoot.appendingPathComponent("samples/demo-sessions.tsv"), encoding: .utf8)
        var lines = demo.split(separator: "\n").map(String.init)
        lines.insert(String(repeating: "x", count: 3_000), at: 10)
        let result = try fileAndPipe(lines)
        #expect(result.file.stderr.contains("skipped line_too_long: 1"), "\(result.file.stderr)")
    }

    /// Input larger than the read buffer (64 KiB) and than one batch handed from the reading
    /// thread to the detectors (1,024 lines), with an over-long line bigger than the buffer:
    /// the pipe, read in pieces, gives what the mapped file gives, line for line.
    @Test func aLargeInputGivesTheSameThroughAPipe() throws {
        let demo = try String(contentsOf: packageRoot.appendingPathComponent("samples/demo-sessions.tsv"), encoding: .utf8)
        let once = demo.split(separator: "\n").map(String.init)
        var lines = (0..<40).flatMap { _ in once }
        lines.insert(String(repeating: "y", count: 150_000), at: 1_500)
        lines.insert(String(repeating: "x", count: 3_000), at: 700)
        let result = try fileAndPipe(lines)
        #expect(result.file.stderr.hasPrefix("records: \(lines.count) read"), "\(result.file.stderr)")
        #expect(result.file.stderr.contains("skipped line_too_long: 2"), "\(result.file.stderr)")
    }

    @Test func missingInputIsARuntimeFailure() throws {
        let result = try run(["detect", "no/such/file.tsv"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("no/such/file.tsv"))
    }

    /// `detect` over a PoP outage's log: among the viewers' findings, one incident on the edge
    /// that fires and resolves, and the cohorts' summary on stderr.
    @Test func detectReportsAnOutageAsOneIncident() throws {
        let lines = OutageLines.cloudFront(perEdge: 100, failing: "FRA56-C2", healthy: "AMS1-C1").map(\.line)
        let result = try run(["detect", "-"], stdin: lines.joined(separator: "\n") + "\n")
        #expect(result.status == 0, "\(result.stderr)")
        let incidents = result.stdout.split(separator: "\n").compactMap { try? JSONParser.parse(String($0)) }.filter { $0["type"] == .string("incident") }
        #expect(incidents.map { $0["status"] } == [.string("firing"), .string("resolved")])
        #expect(incidents.first?["edge_location"] == .string("FRA56-C2") && incidents.first?["session_id"] == .null)
        #expect(incidents.first?["id"] == incidents.last?["id"])
        #expect(result.stderr.contains("incidents: 1 fired"), "\(result.stderr)")
        // The summary counts every finding printed, the incident's two among them.
        let printed = result.stdout.split(separator: "\n").count
        #expect(result.stderr.contains("findings: \(printed)\n"), "\(printed) printed; \(result.stderr)")
        #expect(result.stderr.contains("  incident critical firing: 1\n") && result.stderr.contains("  incident critical resolved: 1\n"), "\(result.stderr)")
    }

    @Test func rulesCheck() throws {
        let ok = try run(["rules", "check"])
        #expect(ok.status == 0)
        #expect(ok.stdout.hasPrefix("rules/default.yaml: OK"))
        #expect(ok.stdout.contains("route severe-buffer-drops -> webhook default"))
        #expect(ok.stdout.contains("incident rebuffering (critical): rebuffer_ratio > 0.02 for 20000 ms, resolved after 60000 ms clear"), "\(ok.stdout)")
        let dir = TestScratch.directory.appendingPathComponent("sentinel-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let bad = dir.appendingPathComponent("bad.yaml")
        try "detectors:\n  buffer_drop:\n    critical_drop_ratio: 2\n".write(to: bad, atomically: true, encoding: .utf8)
        let failed = try run(["rules", "check", bad.path])
        #expect(failed.status == 2)
        #expect(failed.stderr == "cmcd-sentinel: \(bad.path):3: detectors.buffer_drop.critical_drop_ratio: must be between 0.01 and 1.0 (got 2.0)\n")
        #expect(try run(["rules", "check", dir.appendingPathComponent("missing.yaml").path]).status == 2)
        #expect(try run(["detect", "--rules", bad.path, "samples/demo-sessions.tsv"]).status == 2)
    }
}

/// Reads a pipe to its end on a thread of its own.
final class ErrorReader: @unchecked Sendable {
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)
    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
    }
    func wait() -> Data {
        done.wait()
        return data
    }
}

/// The `.ownThread` trait moves a test off Swift's cooperative pool.
struct OwnThreadTraitTests {
    @Test(.ownThread) func aBlockingTestRunsOnAThreadOfItsOwn() {
        #expect(Thread.current.name?.hasPrefix("NIO-ELT") == true, "\(Thread.current.name ?? "unnamed")")
    }

    @Test func otherTestsRunOnThePool() {
        #expect(Thread.current.name?.hasPrefix("NIO-ELT") != true)
    }
}
