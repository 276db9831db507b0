import ArgumentParser
import AsyncAlgorithms
import CMCDDetection
import CMCDRecords
import SentinelSinks
import SentinelDaemon

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension RecordFormat: ExpressibleByArgument {}

/// `cmcd-sentinel detect`: offline detection over a file or standard input.
struct DetectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "detect",
        abstract: "Run the detectors over records from a file or standard input.",
        discussion: """
            Findings are printed on standard output as JSON lines; a summary (records read, \
            skipped by reason, late samples, sessions, findings by type and severity) goes to \
            standard error. Memory stays constant in the input size. At end of input, open \
            episodes are resolved.
            """)

    @Option(help: "Rules file (default: the built-in rules, identical to rules/default.yaml).")
    var rules: String?

    @Option(help: "Record format: cloudfront, json or cmcd.")
    var format: RecordFormat = .cloudfront

    @Option(help: "CloudFront fields in wire order, comma separated (default: the 10-field list).")
    var fields: String?

    @Option(help: "Longest line accepted, in bytes; longer lines are skipped and counted.")
    var maxLineBytes: Int = 64 * 1024

    @Argument(help: "Input file, or - for standard input.")
    var path: String = "-"

    func validate() throws {
        guard (256...16 * 1024 * 1024).contains(maxLineBytes) else {
            throw ValidationError("--max-line-bytes must be between 256 and 16777216")
        }
    }

    func run() async throws {
        let rules = try self.rules.map(RulesFile.load) ?? DetectionRules()
        var configuration = RecordParser.Configuration(format: format, maxLineBytes: maxLineBytes)
        if let fields {
            let names = fields.split(separator: ",").map { $0.trimmingCharacters(in: " ") }
            do { configuration.fields = try CloudFrontFields(names) } catch {
                throw CommandFailure.usage("--fields: \(error)")
            }
        }
        let fd: Int32
        if path == "-" {
            fd = 0
        } else {
            fd = open(path, O_RDONLY)
            guard fd >= 0 else { throw CommandFailure.runtime("\(path): cannot open: \(String(cString: strerror(errno)))") }
        }
        defer { if fd != 0 { close(fd) } }

        // Lines are read on a thread of their own, a batch ahead of the parser and detectors
        // on this one: the page faults and copies of reading stay off the thread that does
        // the work. Samples are not made there: a sample freed on another thread than the one
        // that made it costs more than the parse.
        let batches = AsyncChannel<LineBatch>()
        let readingThread = DedicatedThreadExecutor()
        let maxLineBytes = self.maxLineBytes
        let reading = Task(executorPreference: readingThread) { () async throws in
            defer { batches.finish() }
            let reader = LineReader(fd: fd, maxLineBytes: maxLineBytes)
            while true {
                var batch = LineBatch()
                if try reader.read(upTo: LineBatch.lines, { batch.append($0) }) == 0 { return }
                await batches.send(batch)
            }
        }

        // Findings are written out (JSON, writes) on the reading thread too, a batch behind.
        let written = AsyncChannel<[Finding]>()
        let writing = Task(executorPreference: readingThread) {
            let out = OutputBuffer()
            for await findings in written {
                for finding in findings { out.writeLine(finding) }
            }
            out.flush()
        }

        var parser = RecordParser(configuration: configuration)
        var engine = DetectionEngine(rules: rules)
        var cohorts = CohortTracker(rules: rules)
        // A window closes once the stream is this far past its end (samples that late are late).
        let lateness = rules.sessions.reorderToleranceMs
        var findings: [Finding] = []
        for await batch in batches {
            for _ in 0..<batch.tooLong { parser.countSkipped(.lineTooLong) }
            batch.forEach { line in
                parser.parse(line: line) { outcome in
                    if case .sample(let sample) = outcome {
                        engine.process(sample, into: &findings)
                        cohorts.observe(sample, engine.lastObservation, into: &findings)
                        cohorts.advance(to: engine.watermark &- lateness, into: &findings)
                    }
                }
            }
            if !findings.isEmpty {
                await written.send(findings)
                findings = []
            }
        }
        let failure: (any Error)?
        do {
            try await reading.value
            failure = nil
        } catch {
            failure = error
        }
        if failure == nil {
            engine.finish(into: &findings)
            cohorts.finish(into: &findings)
        }
        if !findings.isEmpty { await written.send(findings) }
        written.finish()
        await writing.value
        await readingThread.shutdown()
        if let failure { throw CommandFailure.runtime("\(path == "-" ? "standard input" : path): \(failure)") }
        for line in Self.summary(parser.statistics, engine.statistics, cohorts.statistics) { printError(line) }
    }

    static func summary(_ p: ParseStatistics, _ d: DetectionStatistics, _ c: CohortStatistics = CohortStatistics()) -> [String] {
        // Every finding printed: the viewers' and the cohorts' incidents.
        let byKey = d.findings.merging(c.findings, uniquingKeysWith: +)
        let findingsTotal = byKey.values.reduce(0, +)
        var lines = [
            "records: \(p.lines) read, \(p.samples) with CMCD, \(p.skippedTotal) skipped, \(d.late) late, \(d.reordered) reordered, \(d.futureTimestamps) future_timestamp",
            "sessions: \(d.sessionsStarted) seen, \(d.idleEvictions) idle-evicted, \(d.capacityEvictions) evicted at capacity",
            "findings: \(findingsTotal)",
        ]
        for reason in p.skipped.keys.sorted() {
            lines.append("  skipped \(reason.rawValue): \(p.skipped[reason]!)")
        }
        if p.memberErrorsTotal > 0 {
            let byKey = p.memberErrors.keys.sorted().map { "\($0) \(p.memberErrors[$0]!)" }.joined(separator: ", ")
            lines.insert("skipped members: \(p.memberErrorsTotal) (records kept without them: \(byKey))", at: 2)
        }
        for key in byKey.keys.sorted() {
            lines.append("  \(key.type.rawValue) \(key.severity.rawValue) \(key.status.rawValue): \(byKey[key]!)")
        }
        if c.windowsClosed > 0 {
            lines.append(
                "cohorts: \(c.windowsClosed) windows, \(c.liveCohorts) live, \(c.cohortsRefused) refused at capacity; incidents: \(c.incidentsFired) fired, \(c.incidentsFolded) folded into another"
            )
        }
        return lines
    }
}

/// Lines copied out of the input, as the reading thread hands them on.
struct LineBatch: Sendable {
    /// Lines per batch.
    static let lines = 1024
    private var packed = PackedLines()
    /// Over-long lines met while filling the batch (skipped, only counted).
    private(set) var tooLong = 0

    mutating func append(_ line: LineReader.Line) {
        switch line {
        case .tooLong:
            tooLong += 1
        case .line(let text):
            if packed.count == 0 { packed.reserve(lines: Self.lines, bytesEach: text.count + 64) }
            packed.append(text)
        }
    }

    /// Calls `body` with each line in order.
    func forEach(_ body: (UnsafeBufferPointer<UInt8>) -> Void) { packed.forEach(body) }
}
