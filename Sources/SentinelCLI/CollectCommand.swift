import ArgumentParser
import Logging
import SentinelCollector
import SentinelConfig
import SentinelKafka

/// `cmcd-sentinel collect`: receive CMCD v2 event-mode reports over HTTP, produce them to Kafka.
struct CollectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "collect",
        abstract: "Receive CMCD v2 event-mode batches over HTTP and produce each report to Kafka for run.",
        discussion: """
            Players POST batches to http://HOST:PORT/cmcd (Content-Type application/cmcd or text/cmcd, \
            one report per line); v2 request-mode data may also arrive as CMCD-* headers or a CMCD= \
            query on /cmcd. Each report becomes one record in the cmcd format (run --format cmcd, or \
            input.format: cmcd), keyed by session id, with ts set on arrival when the player sent none. \
            Answers 204 once the broker has confirmed every report of the batch; 503 with Retry-After \
            when it cannot (the player retries); 429 over --rate; 413 over --max-body-bytes; 401 without \
            the bearer token when one is set (--token or SENTINEL_COLLECT_TOKEN). A report without a \
            session id is rejected (the rest of its batch is produced; header CMCD-Rejected says how \
            many and why). GET /healthz answers ok.
            """)

    @Option(help: "Listen on HOST:PORT.")
    var listen: String = "127.0.0.1:8780"

    @Option(help: "Bootstrap brokers (default: $SENTINEL_KAFKA_BROKERS or 127.0.0.1:9092).")
    var brokers: String?

    @Option(help: "Topic (default: $SENTINEL_KAFKA_TOPIC or cmcd-events).")
    var topic: String?

    @Option(help: "Bearer token required from players (default: $SENTINEL_COLLECT_TOKEN; none when empty).")
    var token: String?

    @Option(help: "Largest request body in bytes.")
    var maxBodyBytes: Int = 1 << 20

    @Option(help: "Reports accepted per second on average, over all clients.")
    var rate: Double = 20_000

    @Option(name: .customLong("property"), help: "A librdkafka property KEY=VALUE (repeatable).")
    var properties: [String] = []

    func validate() throws {
        guard HostPort(listen) != nil else { throw ValidationError("--listen: '\(listen)' is not host:port") }
        guard (1024...64 << 20).contains(maxBodyBytes) else { throw ValidationError("--max-body-bytes must be between 1024 and 67108864") }
        guard rate >= 1, rate <= 10_000_000 else { throw ValidationError("--rate must be between 1 and 10000000") }
        for p in properties where !p.contains("=") { throw ValidationError("--property takes KEY=VALUE, got '\(p)'") }
    }

    func run() async throws {
        let environment = ProcessEnvironment.current
        let address = HostPort(listen)!
        let brokers = self.brokers ?? environment["SENTINEL_KAFKA_BROKERS"] ?? "127.0.0.1:9092"
        let topic = self.topic ?? environment["SENTINEL_KAFKA_TOPIC"] ?? "cmcd-events"
        let token = (self.token ?? environment["SENTINEL_COLLECT_TOKEN"]).flatMap { $0.isEmpty ? nil : $0 }
        // Delivery reports (and so the answers to players) within 10 s, whatever the broker does.
        var kafkaProperties = ["bootstrap.servers": brokers, "linger.ms": "5", "message.timeout.ms": "10000", "acks": "all"]
        for p in properties {
            let parts = p.split(separator: "=", maxSplits: 1)
            kafkaProperties[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        let logger = Logger(label: "cmcd-sentinel-collect")
        let producer: KafkaProducer
        do {
            producer = try KafkaProducer(properties: kafkaProperties, logger: logger)
        } catch {
            throw CommandFailure.usage("collect: \(error)")
        }
        if !["127.0.0.1", "localhost", "::1", "[::1]"].contains(address.host), token == nil {
            logger.warning("collect: listening on \(address.host) without a bearer token: anyone who reaches it can write reports")
        }
        var configuration = CollectorServer.Configuration(host: address.host, port: address.port, topic: topic, token: token)
        configuration.maxBodyBytes = maxBodyBytes
        configuration.reportsPerSecond = rate
        do {
            try await CollectorServer(configuration: configuration, producer: producer, logger: logger).run()
        } catch {
            throw CommandFailure.runtime("collect: \(error)")
        }
    }
}
