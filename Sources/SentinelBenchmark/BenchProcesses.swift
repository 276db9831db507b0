import CMCDDetection
import Foundation
import Logging
import SentinelAlerts
import SentinelConfig
import SentinelDaemon
import SentinelInflux
import SentinelSinks
import SentinelWebhooks

// The e2e benchmark's runs, each in a process of its own (this executable again), as kcat and
// `cmcd-sentinel run` are: each starts with the allocator's heaps and librdkafka's queues
// empty, as the other's do. A child prints its report lines (`e2e: ...`), which the parent
// passes on, and last a line of figures for the parent.

/// Runs this executable with `arguments`, passes its `e2e:` lines on to standard output and
/// returns the fields of its last line, which must start with `arguments[0]`.
func runBenchChild(_ arguments: [String]) throws -> [Substring] {
    let child = Process()
    child.executableURL = URL(fileURLWithPath: "/proc/self/exe")
    child.arguments = arguments
    let output = Pipe()
    child.standardOutput = output
    try child.run()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    child.waitUntilExit()
    let lines = text.split(separator: "\n")
    for line in lines where line.hasPrefix("e2e:") { print(line) }
    let fields = lines.last?.split(separator: " ") ?? []
    guard child.terminationStatus == 0, fields.first.map(String.init) == arguments[0] else {
        throw BenchError(message: "the \(arguments[0]) process failed (status \(child.terminationStatus)): \(text)")
    }
    return Array(fields.dropFirst())
}

/// `sentinel-bench bare-consumer BROKERS TOPIC GROUP RECORDS`: the bare consumer (`bareConsume`),
/// the allocator as glibc sets it up; prints its wall seconds, user and system CPU seconds and
/// page faults.
func bareConsumerProcess(brokers: String, topic: String, group: String, records: Int) {
    do {
        let run = try bareConsume(configuration: benchConfiguration(brokers: brokers, topic: topic), records: records, group: group)
        print("bare-consumer \(run.wall) \(run.usage.user) \(run.usage.system) \(run.usage.minorFaults)")
    } catch {
        FileHandle.standardError.write(Data("bare-consumer: failed: \(error)\n".utf8))
        exit(1)
    }
}

/// Runs `bareConsumerProcess` in a child process and returns what it measured.
func bareConsumeInChildProcess(brokers: String, topic: String, records: Int, group: String) throws -> (wall: Double, usage: ProcessUsage) {
    let fields = try runBenchChild(["bare-consumer", brokers, topic, group, String(records)])
    guard fields.count == 4, let wall = Double(fields[0]), let user = Double(fields[1]), let system = Double(fields[2]), let faults = Int(fields[3]) else {
        throw BenchError(message: "the bare consumer's figures are not readable: \(fields)")
    }
    return (wall, ProcessUsage(user: user, system: system, minorFaults: faults))
}

/// The daemon's sets of sinks, by the name `daemon-run` takes.
let daemonVariants: [(key: String, name: String)] = [
    ("stdout", "stdout"), ("alerts", "stdout and the alerts table (SQLite)"), ("influx", "stdout and InfluxDB (every request and finding)"),
]

/// Runs `daemonRunProcess` in a child process: its report lines go to standard output; returns
/// the variant's name and its CPU-seconds per million records.
func daemonRunInChildProcess(brokers: String, topic: String, records: Int, group: String, variant: String) throws -> (name: String, cpu: Double) {
    let fields = try runBenchChild(["daemon-run", brokers, topic, group, String(records), variant])
    guard fields.count == 1, let cpu = Double(fields[0]), let name = daemonVariants.first(where: { $0.key == variant })?.name else {
        throw BenchError(message: "the daemon's figures are not readable: \(fields)")
    }
    return (name, cpu)
}

/// `sentinel-bench daemon-run BROKERS TOPIC GROUP RECORDS VARIANT`: the daemon as `run` composes
/// it, over `records` records of `topic` from the beginning, with VARIANT's sinks: `stdout`
/// (findings as JSON lines, to /dev/null, as `run` writes them), `alerts` (and the alerts
/// table, SQLite, in a scratch file), `influx` (and every request and finding to InfluxDB, as
/// `write_raw` does, at SENTINEL_BENCH_INFLUX_URL; influxd's CPU is its own). Prints what it did
/// (CPU by thread with SENTINEL_BENCH_THREADS, resident memory per session with
/// SENTINEL_BENCH_SESSIONS of 100,000 or more), then its CPU-seconds per million records.
func daemonRunProcess(brokers: String, topic: String, group: String, records: Int, variant: String) async {
    var quietLogger = Logger(label: "sentinel-bench")
    quietLogger.logLevel = .critical
    let devNull = open("/dev/null", O_WRONLY)
    defer { close(devNull) }
    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("sentinel-bench-alerts-\(getpid()).db").path
    defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: scratch + suffix) } }
    do {
        guard let name = daemonVariants.first(where: { $0.key == variant })?.name else { usageError("no such set of sinks: \(variant)") }
        var sinks: [any FindingSink] = [MeasuringSink(), StdoutSink(fd: devNull)]
        switch variant {
        case "alerts":
            let store = try await AlertStore.open(url: "sqlite:\(scratch)", logger: quietLogger)
            let routing = WebhookRouting(routes: DetectionRules().routes, endpoints: [])
            sinks.append(AlertSink(store: store, notifications: { routing.plan($0, now: $1) }, logger: quietLogger))
        case "influx":
            var influx = SentinelConfiguration.Influx()
            influx.url = ProcessEnvironmentValue("SENTINEL_BENCH_INFLUX_URL") ?? "http://127.0.0.1:8086"
            influx.database = ProcessEnvironmentValue("SENTINEL_BENCH_INFLUX_DATABASE") ?? "cmcd-metrics"
            influx.gzip = ProcessEnvironmentValue("SENTINEL_BENCH_INFLUX_GZIP") == "true"
            sinks.append(InfluxSink(configuration: influx, logger: quietLogger))
        default: break
        }
        var configuration = benchConfiguration(brokers: brokers, topic: topic)
        configuration.kafka.groupID = group
        var options = Daemon.Options()
        options.exitWhenIdleSeconds = 1
        let sessions = ProcessEnvironmentValue("SENTINEL_BENCH_SESSIONS").flatMap { Int($0) } ?? 10_000
        let daemon = Daemon(configuration: configuration, rules: DetectionRules(), options: options, sinks: sinks, logger: quietLogger)
        // With many sessions: resident memory before and at its highest while consuming.
        let residentBefore = sessions >= 100_000 ? residentBytes() : nil
        let residentPeak = Peak()
        let usageStart = ProcessUsage.now()
        let sampler = ProcessEnvironmentValue("SENTINEL_BENCH_THREADS") != nil ? ThreadCPUSampler() : nil
        let consumeStart = Date()
        try await withThrowingDiscardingTaskGroup { group in
            // The InfluxDB writer sends in the background while the daemon runs.
            for case let influx as InfluxSink in sinks { group.addTask { await influx.run() } }
            if let sampler { group.addTask { await sampler.run() } }
            if residentBefore != nil {
                group.addTask {
                    while !Task.isCancelled, daemon.metrics.recordsConsumed < records {
                        residentPeak.note(residentBytes())
                        try? await Task.sleep(for: .milliseconds(20))
                    }
                    residentPeak.note(residentBytes())
                }
            }
            try await daemon.run()
            sampler?.sample()
            sampler?.stop()
            for case let influx as InfluxSink in sinks { influx.close() }
        }
        let seconds = Date().timeIntervalSince(consumeStart) - 1  // the idle second
        let usage = ProcessUsage.now() - usageStart
        let consumed = daemon.metrics.recordsConsumed
        let cpu = usage.cpu / Double(max(consumed, 1)) * 1e6
        if let sampler {
            print("e2e:   CPU-s by thread: " + sampler.spent().map { "\($0.0) \(format($0.1))" }.joined(separator: ", "))
        }
        if let baseline = residentBefore {
            let peak = max(residentPeak.value, baseline)
            print(
                "e2e:   resident memory grew by \((peak - baseline) / 1_048_576) MiB while consuming \(sessions) sessions: "
                    + "\((peak - baseline) / sessions) bytes per live session, librdkafka's queues included")
        }
        let findings = (sinks.first as? MeasuringSink)?.findings ?? 0
        print(
            "e2e: daemon, \(name): \(consumed) records in \(format(seconds)) s: \(Int(Double(consumed) / seconds)) records/s, "
                + "\(format(cpu)) CPU-s per million records (\(usage.describe(perMillion: consumed))), \(findings) findings")
        print("daemon-run \(cpu)")
    } catch {
        FileHandle.standardError.write(Data("daemon-run: failed: \(error)\n".utf8))
        exit(1)
    }
}
