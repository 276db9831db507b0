import ArgumentParser
import CMCDRecords
import SentinelDaemon
import SentinelHTTP
import SentinelKafka
import SentinelKinesis

#if canImport(Glibc)
import Glibc
#endif

/// Where `replay` sends records.
enum ReplayTarget: String, ExpressibleByArgument, CaseIterable {
    case kafka, kinesis
}

/// How `replay --to kinesis` keys records.
enum PartitionKeying: String, ExpressibleByArgument, CaseIterable {
    case session, random
}

/// `cmcd-sentinel replay`: produce record lines to Kafka or Kinesis, keyed by session id.
struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Produce record lines from a file or standard input to Kafka or Kinesis, keyed by session id.",
        discussion: """
            Each line becomes one record. The key (Kinesis: the partition key) is the line's CMCD \
            session id (parsed with --format/--fields), so every record of a session lands on the \
            same partition or shard; lines without one are sent without a key (Kinesis: keyed by \
            their own hash). Progress goes to standard error once a second. Kinesis credentials \
            come from the environment, ~/.aws/credentials, or the container or instance role.
            """)

    @Option(help: "Where to send: kafka or kinesis.")
    var to: ReplayTarget = .kafka

    @Option(help: "Kinesis stream (default: $SENTINEL_KINESIS_STREAM or cmcd-logs).")
    var stream: String?

    @Option(help: "Kinesis region (default: $AWS_REGION, $AWS_DEFAULT_REGION or us-east-1).")
    var region: String?

    @Option(help: "Kinesis endpoint URL (default: $SENTINEL_KINESIS_ENDPOINT, else AWS's for the region).")
    var endpoint: String?

    @Option(help: "Create the Kinesis stream with this many shards if it does not exist.")
    var createShards: Int?

    @Option(help: "Kinesis partition keys: session (the session id) or random (as CloudFront's own keys spread a session over the shards).")
    var partitionKey: PartitionKeying = .session

    @Option(help: "Bootstrap brokers (default: $SENTINEL_KAFKA_BROKERS or 127.0.0.1:9092).")
    var brokers: String?

    @Option(help: "Topic (default: $SENTINEL_KAFKA_TOPIC or cmcd-logs).")
    var topic: String?

    @Option(help: "Records per second at most (default: as fast as possible).")
    var rate: Double?

    @Flag(help: "Start over at the end of the file, until interrupted.")
    var loop = false

    @Option(help: "Record format, to find the session id: cloudfront, json or cmcd.")
    var format: RecordFormat = .cloudfront

    @Option(help: "CloudFront fields in wire order, comma separated.")
    var fields: String?

    @Option(name: .customLong("property"), help: "A librdkafka property KEY=VALUE (repeatable).")
    var properties: [String] = []

    @Argument(help: "Input file, or - for standard input.")
    var path: String = "-"

    func validate() throws {
        if let rate, !(rate > 0 && rate <= 10_000_000) { throw ValidationError("--rate must be between 0 and 10000000") }
        if loop, path == "-" { throw ValidationError("--loop needs a file, not standard input") }
        for p in properties where !p.contains("=") { throw ValidationError("--property takes KEY=VALUE, got '\(p)'") }
        if let createShards, !(1...500).contains(createShards) { throw ValidationError("--create-shards must be between 1 and 500") }
        if to == .kafka, stream != nil || region != nil || endpoint != nil || createShards != nil || partitionKey != .session {
            throw ValidationError("--stream, --region, --endpoint, --create-shards and --partition-key are for --to kinesis")
        }
        if to == .kinesis, brokers != nil || topic != nil || !properties.isEmpty {
            throw ValidationError("--brokers, --topic and --property are for --to kafka")
        }
    }

    func run() async throws {
        switch to {
        case .kafka: try replayToKafka()
        case .kinesis: try await replayToKinesis()
        }
    }

    var parserConfiguration: RecordParser.Configuration {
        get throws {
            var configuration = RecordParser.Configuration(format: format)
            if let fields {
                do { configuration.fields = try CloudFrontFields(fields.split(separator: ",").map { $0.trimmingCharacters(in: " ") }) } catch {
                    throw CommandFailure.usage("--fields: \(error)")
                }
            }
            return configuration
        }
    }

    func replayToKafka() throws {
        Interrupt.install()
        let environment = ProcessEnvironment.current
        let brokers = self.brokers ?? environment["SENTINEL_KAFKA_BROKERS"] ?? "127.0.0.1:9092"
        let topic = self.topic ?? environment["SENTINEL_KAFKA_TOPIC"] ?? "cmcd-logs"
        let configuration = try parserConfiguration
        var kafkaProperties = ["bootstrap.servers": brokers, "linger.ms": "20", "compression.type": "lz4"]
        for p in properties {
            let parts = p.split(separator: "=", maxSplits: 1)
            kafkaProperties[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        let producer: KafkaProducer
        do {
            producer = try KafkaProducer(properties: kafkaProperties) { event in
                if case .error(let error, _) = event { printError("cmcd-sentinel replay: kafka: \(error)") }
            }
        } catch {
            throw CommandFailure.usage("\(error)")
        }
        do throws(KafkaError) { try producer.requireBroker(timeoutMs: 10_000) } catch {
            throw CommandFailure.runtime("replay: \(brokers): \(error)")
        }

        var parser = RecordParser(configuration: configuration)
        var sent = 0
        var tooLong = 0
        let started = monotonicSeconds()
        var lastProgress = started
        var failure: KafkaError?
        repeat {
            let fd = path == "-" ? 0 : open(path, O_RDONLY)
            guard fd >= 0 else { throw CommandFailure.runtime("\(path): cannot open: \(String(cString: strerror(errno)))") }
            defer { if fd != 0 { close(fd) } }
            try LineReader(fd: fd, maxLineBytes: configuration.maxLineBytes).forEachLine { line in
                guard failure == nil, !Interrupt.requested else { return }
                guard case .line(let bytes) = line else {
                    tooLong += 1  // counted and reported: never dropped silently
                    return
                }
                guard !bytes.isEmpty else { return }
                var key: [UInt8]?
                parser.parse(line: bytes) { outcome in
                    if key == nil, case .sample(let sample) = outcome { key = Array(sample.sessionID.utf8) }
                }
                do throws(KafkaError) {
                    try producer.send(topic: topic, key: key, value: Array(bytes))
                } catch {
                    failure = error
                    return
                }
                sent += 1
                producer.poll()
                if let rate {
                    let due = started + Double(sent) / rate
                    let now = monotonicSeconds()
                    if due > now { sleepSeconds(due - now) }
                }
                let now = monotonicSeconds()
                if now - lastProgress >= 1 {
                    lastProgress = now
                    printError("replay: \(sent) records sent (\(Int(Double(sent) / (now - started)))/s)")
                }
            }
        } while loop && failure == nil && !Interrupt.requested
        do throws(KafkaError) { try producer.flush(timeoutMs: 30_000) } catch { failure = failure ?? error }
        let deliveries = producer.deliveries
        printError(
            "replay: \(sent) records produced to \(topic), \(deliveries.delivered) delivered, \(deliveries.failed) failed"
                + (tooLong > 0 ? ", \(tooLong) lines over \(configuration.maxLineBytes) bytes skipped" : ""))
        if let failure { throw CommandFailure.runtime("replay: \(failure)") }
        if deliveries.failed > 0 { throw CommandFailure.runtime("replay: \(deliveries.failed) records were not delivered: \(deliveries.lastError?.description ?? "")") }
        if tooLong > 0 { throw CommandFailure.runtime("replay: \(tooLong) lines longer than \(configuration.maxLineBytes) bytes were not sent") }
    }
}

/// The process environment, read once.
enum ProcessEnvironment {
    static var current: [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let eq = text.firstIndex(of: "=") { result[String(text[..<eq])] = String(text[text.index(after: eq)...]) }
            pointer += 1
        }
        return result
    }
}

func sleepSeconds(_ seconds: Double) {
    var ts = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9))
    nanosleep(&ts, nil)
}

/// SIGINT/SIGTERM set a flag that long-running loops check.
enum Interrupt {
    nonisolated(unsafe) private static var flag: sig_atomic_t = 0
    static var requested: Bool { flag != 0 }

    static func install() {
        signal(SIGINT) { _ in Interrupt.flag = 1 }
        signal(SIGTERM) { _ in Interrupt.flag = 1 }
    }
}
