import CMCDDetection
import Foundation
import Logging
import SentinelConfig
import SentinelDaemon
import SentinelAlerts
import SentinelInflux
import SentinelKafka
import SentinelSinks
import SentinelWebhooks
import Synchronization

/// Reads one environment variable.
func ProcessEnvironmentValue(_ name: String) -> String? { ProcessInfo.processInfo.environment[name] }

/// Counts findings and their latency from the triggering record's event time (set to the
/// wall clock when it was produced) to the moment the daemon hands them to the sink.
final class MeasuringSink: FindingSink {
    let name = "measuring"
    let measuring: Bool
    private let state = Mutex((findings: 0, latenciesMs: [Int64]()))

    init(measuring: Bool = false) { self.measuring = measuring }

    var findings: Int { state.withLock { $0.findings } }

    func write(_ batch: [Finding]) async throws {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        state.withLock {
            $0.findings += batch.count
            if measuring { for f in batch where f.status == .firing { $0.latenciesMs.append(now - f.detectedAt) } }
        }
    }

    func flush() async throws {}

    func percentiles() -> (p50: Int64, p99: Int64, count: Int)? {
        state.withLock {
            guard !$0.latenciesMs.isEmpty else { return nil }
            let sorted = $0.latenciesMs.sorted()
            return (sorted[sorted.count / 2], sorted[min(sorted.count - 1, sorted.count * 99 / 100)], sorted.count)
        }
    }
}

func produce(_ producer: KafkaProducer, topic: String, count: Int, generator: inout LineGenerator, rate: Int?, realTime: Bool) async throws {
    let start = Date()
    for i in 0..<count {
        let line = generator.next(at: realTime ? Int(Date().timeIntervalSince1970 * 1000) : nil)
        // Key: the session, as `replay` keys by session id.
        let key = Array("s\(generator.lastSession)".utf8)
        try producer.send(topic: topic, key: key, value: line)
        if i % 1000 == 0 { producer.poll() }
        if let rate {
            let due = Double(i) / Double(rate)
            let elapsed = Date().timeIntervalSince(start)
            if due > elapsed { try await Task.sleep(for: .seconds(due - elapsed)) }
        }
    }
    try producer.flush(timeoutMs: 60_000)
}

/// User + system CPU seconds of this process so far (every thread).
func processCPUSeconds() -> Double { ProcessUsage.now().cpu }

/// The process's user and system CPU seconds and minor page faults (`getrusage`), to take
/// differences of. System time is mostly page faults: on a virtual machine whose free memory
/// goes back to the host (free page reporting), a fault on such a page costs several times
/// one that the guest still holds, so a run's system time says how much of its CPU was that.
struct ProcessUsage {
    var user: Double
    var system: Double
    var minorFaults: Int

    var cpu: Double { user + system }

    static func now() -> ProcessUsage {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return ProcessUsage(user: seconds(usage.ru_utime), system: seconds(usage.ru_stime), minorFaults: usage.ru_minflt)
    }

    static func - (a: ProcessUsage, b: ProcessUsage) -> ProcessUsage {
        ProcessUsage(user: a.user - b.user, system: a.system - b.system, minorFaults: a.minorFaults - b.minorFaults)
    }

    /// "of which system 0.21, 46000 page faults" for a run over `records` records, per million.
    func describe(perMillion records: Int) -> String {
        let scale = 1e6 / Double(records)
        return "of which system \(format(system * scale)), \(Int((Double(minorFaults) * scale).rounded())) page faults"
    }
}

func format(_ value: Double) -> String { String(format: "%.2f", value) }

/// The largest value noted, from any task.
final class Peak: Sendable {
    private let largest = Atomic<Int>(0)
    func note(_ value: Int) { largest.max(value, ordering: .relaxed) }
    var value: Int { largest.load(ordering: .relaxed) }
}

/// CPU seconds of each live thread of this process, by thread id, with its name (from
/// /proc/self/task).
func threadCPUSeconds() -> [String: (name: String, seconds: Double)] {
    let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
    var result: [String: (name: String, seconds: Double)] = [:]
    guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return [:] }
    for task in tasks {
        guard let stat = try? String(contentsOfFile: "/proc/self/task/\(task)/stat", encoding: .utf8),
            let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
        else { continue }
        let name = String(stat[stat.index(after: open)..<close])
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { continue }
        result[task] = (name, (user + system) / ticks)
    }
    return result
}

/// Samples every thread's CPU time while a run goes on (threads that end before it does are
/// caught at their last sample), to say where the run's CPU went.
final class ThreadCPUSampler: Sendable {
    private let first = threadCPUSeconds()
    private let last = Mutex<[String: (name: String, seconds: Double)]>([:])
    private let stopped = Atomic<Bool>(false)

    func sample() { let now = threadCPUSeconds(); last.withLock { $0.merge(now) { _, new in new } } }

    /// Samples every 50 ms until `stop` (or the task is cancelled: a daemon that failed).
    func run() async {
        while !stopped.load(ordering: .relaxed), !Task.isCancelled {
            sample()
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    func stop() { stopped.store(true, ordering: .relaxed) }

    /// CPU seconds spent since the start, by thread name (the consume loop's thread, named
    /// NIO-ELT-<n>, under one name), largest first.
    func spent() -> [(String, Double)] {
        var byName: [String: Double] = [:]
        for (tid, entry) in last.withLock({ $0 }) {
            let name = entry.name.hasPrefix("NIO-ELT-") ? "consume loop" : entry.name
            byName[name, default: 0] += entry.seconds - (first[tid]?.seconds ?? 0)
        }
        return byName.filter { $0.value > 0.005 }.sorted { $0.value > $1.value }
    }
}

/// Reads `records` records of the configured partitions from the beginning and discards them:
/// the bare cost of fetching, to compare the daemon with. The wall-clock seconds of reading,
/// and the process's CPU from making the client to closing it, as the daemon's run counts its
/// own (and `kcat -C -e` pays both).
func bareConsume(configuration: SentinelConfiguration, records: Int, group: String) throws -> (wall: Double, usage: ProcessUsage) {
    // The daemon's librdkafka properties (its pre-fetch queue among them), without statistics.
    var configuration = configuration
    configuration.kafka.groupID = group
    var properties = Daemon.kafkaProperties(for: configuration)
    properties["statistics.interval.ms"] = nil
    let usageStart = ProcessUsage.now()
    let consumer = try KafkaConsumer(properties: properties)
    try consumer.assign(configuration.kafka.partitions.map { (KafkaTopicPartition(topic: configuration.kafka.topic, partition: $0), offset: nil) })
    let start = Date()
    var seen = 0
    while seen < records, Date().timeIntervalSince(start) < 120 {
        seen += try consumer.pollDiscarding(max: 1_000, timeoutMs: 100)
    }
    let wall = Date().timeIntervalSince(start)
    consumer.close()
    return (wall, ProcessUsage.now() - usageStart)
}

/// The configuration both the daemon and the bare consumer read `topic` with: the daemon's
/// librdkafka defaults, unless SENTINEL_BENCH_QUEUE_KB sets the pre-fetch queue (what
/// librdkafka holds ahead of the loop) or SENTINEL_BENCH_KAFKA adds properties
/// (`key=value,key=value`).
func benchConfiguration(brokers: String, topic: String) -> SentinelConfiguration {
    var configuration = SentinelConfiguration()
    configuration.kafka.brokers = brokers
    configuration.kafka.topic = topic
    configuration.kafka.partitions = [0, 1, 2, 3]
    if let queueKB = ProcessEnvironmentValue("SENTINEL_BENCH_QUEUE_KB") { configuration.kafka.properties["queued.max.messages.kbytes"] = queueKB }
    for pair in (ProcessEnvironmentValue("SENTINEL_BENCH_KAFKA") ?? "").split(separator: ",") {
        let parts = pair.split(separator: "=", maxSplits: 1)
        if parts.count == 2 { configuration.kafka.properties[String(parts[0])] = String(parts[1]) }
    }
    return configuration
}

struct BenchError: Error, CustomStringConvertible { var message: String; var description: String { message } }

/// The daemon end to end through a broker: consumer throughput on a backlog, then per-record
/// latency from produce to finding at a steady rate.
func endToEndBenchmark(brokers: String, records: Int, rate: Int) async {
    var quietLogger = Logger(label: "sentinel-bench")
    quietLogger.logLevel = .critical
    do {
        let topic = "bench-\(ProcessInfo.processInfo.processIdentifier)"
        let script = "scripts/broker/broker.sh"
        if FileManager.default.fileExists(atPath: script) {
            _ = system("SENTINEL_BROKER_PORT=\(brokers.split(separator: ":").last ?? "9092") /bin/bash \(script) topic \(topic) 4 </dev/null")
        }
        let producer = try KafkaProducer(properties: ["bootstrap.servers": brokers, "linger.ms": "20", "compression.type": "lz4", "queue.buffering.max.messages": "1000000"])
        try producer.requireBroker(timeoutMs: 10_000)
        // SENTINEL_BENCH_SESSIONS: how many viewers the backlog has (memory per live session).
        let sessions = ProcessEnvironmentValue("SENTINEL_BENCH_SESSIONS").flatMap { Int($0) } ?? 10_000
        var generator = LineGenerator(sessions: sessions)
        print("e2e: producing \(records) records to \(topic) at \(brokers)...")
        let produceStart = Date()
        try await produce(producer, topic: topic, count: records, generator: &generator, rate: nil, realTime: false)
        print("e2e: produced in \(String(format: "%.1f", Date().timeIntervalSince(produceStart))) s (\(Int(Double(records) / Date().timeIntervalSince(produceStart))) records/s)")

        var configuration = benchConfiguration(brokers: brokers, topic: topic)
        var options = Daemon.Options()

        // The same backlog read by a bare librdkafka consumer (fetch and discard: what `kcat -C
        // -e` does) and by the daemon with each set of sinks, each in a process of its own, as
        // kcat and `cmcd-sentinel run` are: a fresh process each time, so that no run inherits
        // another's heaps (glibc hands an exited thread's arena, its pages resident or not, to
        // whichever thread comes next, and which one that is changes from run to run). CPU is
        // the process's user + system time from making the client to closing it (librdkafka's
        // threads included; the daemon's idle second before it stops too, but not its sinks'
        // set-up).
        var sets = [["stdout", "alerts"]]
        // With InfluxDB, its runs come after all the others: influxd goes on working (its
        // cache, its compactions) for a while after taking the points, on the same cores, and
        // the daemon's runs after it took up to half as much CPU again.
        if ProcessEnvironmentValue("SENTINEL_BENCH_INFLUX_URL") != nil { sets.append(["influx"]) }
        // SENTINEL_BENCH_ROUNDS: each comparison again, each round against its own bare
        // consumer's runs, and the medians over the rounds (one round when memory is measured).
        let rounds = sessions >= 100_000 ? 1 : max(1, ProcessEnvironmentValue("SENTINEL_BENCH_ROUNDS").flatMap { Int($0) } ?? 1)
        var bareCPUs: [Double] = []
        var cpuByVariant: [String: [Double]] = [:]
        var ratiosByVariant: [String: [Double]] = [:]
        var variantNames: [String] = []
        for (setIndex, set) in sets.enumerated() {
            for round in 1...rounds {
                if rounds > 1 { print("e2e: round \(round) of \(rounds)") }
                // The bare consumer runs once before the daemons and twice after; the median of
                // the three is the round's baseline: a run whose page faults land on memory the
                // guest had handed back to the host (free page reporting) costs up to twice the
                // system time, and one such run should not move the baseline.
                var bareRuns: [(wall: Double, usage: ProcessUsage)] = []
                func bareRun(_ label: String) throws {
                    let run = try bareConsumeInChildProcess(brokers: brokers, topic: topic, records: records, group: "bench-bare-\(topic)-\(setIndex)-\(round)-\(bareRuns.count)")
                    bareRuns.append(run)
                    print(
                        "e2e: bare consumer\(label): \(records) records in \(format(run.wall)) s, \(format(run.usage.cpu / Double(records) * 1e6)) CPU-s per million records "
                            + "(\(run.usage.describe(perMillion: records)))")
                }
                try bareRun("")
                var daemonRuns: [(name: String, cpu: Double)] = []
                for (index, variant) in set.enumerated() {
                    daemonRuns.append(
                        try daemonRunInChildProcess(brokers: brokers, topic: topic, records: records, group: "bench-\(topic)-\(setIndex)-\(round)-\(index)", variant: variant))
                }
                try bareRun(" again")
                try bareRun(" a third time")
                let bareCPU = PassRates(bareRuns.map { $0.usage.cpu / Double(records) * 1e6 }).median
                print("e2e: bare consumer, the median of the three: \(format(bareCPU)) CPU-s per million records")
                bareCPUs.append(bareCPU)
                for run in daemonRuns {
                    print("e2e: daemon, \(run.name): \(format(run.cpu)) CPU-s per million records, \(format(run.cpu / bareCPU)) x the bare consumer")
                    if !variantNames.contains(run.name) { variantNames.append(run.name) }
                    cpuByVariant[run.name, default: []].append(run.cpu)
                    ratiosByVariant[run.name, default: []].append(run.cpu / bareCPU)
                }
            }
        }
        if rounds > 1 {
            // Each round's ratio is against that round's bare consumer; the median of those.
            func summary(_ values: [Double]) -> String {
                let sorted = PassRates(values).sorted
                return "median \(format(PassRates(values).median)) (\(format(sorted.first!)) to \(format(sorted.last!)))"
            }
            print("e2e: over \(rounds) rounds, CPU-s per million records: bare consumer (each round's median of three) \(summary(bareCPUs))")
            for name in variantNames {
                print("e2e: over \(rounds) rounds, daemon, \(name): \(summary(cpuByVariant[name] ?? [])) CPU-s, \(summary(ratiosByVariant[name] ?? [])) x the bare consumer")
            }
        }
        configuration.kafka.groupID = "bench-\(topic)"

        // Latency at a steady rate: event time = produce time.
        let latencyTopic = topic + "-latency"
        if FileManager.default.fileExists(atPath: script) {
            _ = system("SENTINEL_BROKER_PORT=\(brokers.split(separator: ":").last ?? "9092") /bin/bash \(script) topic \(latencyTopic) 4 </dev/null")
        }
        configuration.kafka.topic = latencyTopic
        configuration.kafka.groupID = "bench-\(latencyTopic)"
        // The producer learns the new topic's partitions first (its first records would wait
        // for that metadata, and count it as the daemon's latency): one viewer's request.
        var firstViewer = LineGenerator(sessions: 1)
        try await produce(producer, topic: latencyTopic, count: 1, generator: &firstViewer, rate: nil, realTime: true)
        options.exitWhenIdleSeconds = 3
        let latencySink = MeasuringSink(measuring: true)
        let latencyDaemon = Daemon(configuration: configuration, rules: DetectionRules(), options: options, sinks: [latencySink], logger: quietLogger)
        let running = Task { try await latencyDaemon.run() }
        try await Task.sleep(for: .seconds(1))
        let seconds2 = 10
        var steady = LineGenerator(sessions: 10_000)
        print("e2e: producing \(rate) records/s for \(seconds2) s with event time = produce time...")
        try await produce(producer, topic: latencyTopic, count: rate * seconds2, generator: &steady, rate: rate, realTime: true)
        while latencyDaemon.metrics.recordsConsumed < rate * seconds2 { try await Task.sleep(for: .milliseconds(200)) }
        try await Task.sleep(for: .seconds(4))
        latencyDaemon.requestStop()
        _ = try? await running.value
        if let p = latencySink.percentiles() {
            print("e2e: produce -> finding latency over \(p.count) findings: p50 \(p.p50) ms, p99 \(p.p99) ms (includes the producer's linger.ms=20)")
        }
    } catch {
        FileHandle.standardError.write(Data("e2e: failed: \(error)\n".utf8))
        exit(1)
    }
}
