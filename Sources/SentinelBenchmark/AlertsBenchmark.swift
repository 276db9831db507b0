import CMCDDetection
import CMCDRecords
import Foundation
import Logging
import SentinelAlerts
import SentinelWebhooks

/// What the alerts table (SQLite) costs per finding: the findings of the benchmark's lines,
/// written through the alerts sink in batches of 1,000 as the daemon writes them (at most;
/// SENTINEL_BENCH_BATCH sets another size), timed by the process's CPU (user + system) and the
/// wall clock.
func alertsBenchmark(findingCount: Int) async {
    var generator = LineGenerator(sessions: 10_000)
    var parser = RecordParser()
    var engine = DetectionEngine()
    var findings: [Finding] = []
    while findings.count < findingCount {
        generator.next().withUnsafeBufferPointer {
            parser.parse(line: $0) { if case .sample(let s) = $0 { engine.process(s, into: &findings) } }
        }
    }
    findings.removeLast(findings.count - findingCount)
    var logger = Logger(label: "sentinel-bench")
    logger.logLevel = .critical
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("bench-alerts-\(UUID().uuidString).db").path
    defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
    do {
        let store = try await AlertStore.open(url: "sqlite:\(path)", logger: logger)
        let routing = WebhookRouting(routes: DetectionRules().routes, endpoints: [])
        let sink = AlertSink(store: store, notifications: { routing.plan($0, now: $1) }, logger: logger)
        let cpuStart = processCPUSeconds()
        let start = nowNanoseconds()
        let batchSize = max(1, ProcessEnvironmentValue("SENTINEL_BENCH_BATCH").flatMap { Int($0) } ?? 1_000)
        var index = 0
        while index < findings.count {
            let batch = Array(findings[index..<min(index + batchSize, findings.count)])
            try await sink.write(batch)
            index += batch.count
        }
        let wall = Double(nowNanoseconds() - start) / 1e9
        let cpu = processCPUSeconds() - cpuStart
        await store.close()
        print(
            "alerts table (SQLite): \(findings.count) findings in batches of \(batchSize): \(format(cpu / Double(findings.count) * 1e6)) CPU-µs "
                + "and \(format(wall / Double(findings.count) * 1e6)) µs wall-clock per finding")
    } catch {
        FileHandle.standardError.write(Data("alerts: failed: \(error)\n".utf8))
        exit(1)
    }
}
