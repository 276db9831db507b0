import CMCDRecords
import SentinelYAML

/// The daemon's configuration: a YAML file, overridden by `SENTINEL_*` environment
/// variables, overridden by command-line flags. Validated whole at start.
public struct SentinelConfiguration: Sendable, Equatable {
    public struct Kafka: Sendable, Equatable {
        /// Comma-separated `host:port` list.
        public var brokers = "127.0.0.1:9092"
        public var topic = "cmcd-logs"
        public var groupID = "cmcd-sentinel"
        /// This daemon's static group membership (`group.instance.id`, KIP-345): a restart
        /// within the session timeout gets its partitions back at once, without a rebalance
        /// ("" : dynamic membership).
        public var instanceID = ""
        /// Passed to librdkafka unchanged (`security.protocol`, `sasl.*`, ...).
        public var properties: [String: String] = [:]
        /// Partitions to read without a consumer group rebalance (empty: join the group).
        public var partitions: [Int32] = []
        /// Where records that cannot be parsed go, with the reason in a header ("" disables).
        public var deadLetterTopic = ""
    }

    public struct Input: Sendable, Equatable {
        /// Where records come from.
        public enum Source: String, Sendable, Equatable { case kafka, kinesis }
        public var source: Source = .kafka
        public var format: RecordFormat = .cloudfront
        public var fields: CloudFrontFields = .default
    }

    /// The Kinesis stream read when `input.source` is `kinesis` (CloudFront real-time logs).
    public struct Kinesis: Sendable, Equatable {
        public var stream = "cmcd-logs"
        /// "" : `AWS_REGION`, `AWS_DEFAULT_REGION`, else us-east-1.
        public var region = ""
        /// "" : AWS's endpoint for the region.
        public var endpoint = ""
        /// The DynamoDB endpoint of the lease table ("" : AWS's for the region; `endpoint`'s
        /// host when that is set, as local Kinesis implementations serve both).
        public var dynamodbEndpoint = ""
        /// The DynamoDB table of the shard leases (KCL layout), shared by the daemons of one
        /// application.
        public var leaseTable = "cmcd-sentinel-leases"
        /// A lease not renewed for this long is taken by another daemon.
        public var failoverMs: Int64 = 10_000
        /// A session's records may be in any shard (CloudFront picks the partition keys): one
        /// daemon reads every shard into one detection state, others stand by. False for a
        /// stream keyed by session id: the daemons share the shards.
        public var sessionsSpanShards = true
    }

    /// The InfluxDB sink (`influx`): raw requests and findings as line protocol.
    public struct Influx: Sendable, Equatable {
        public enum API: String, Sendable, Equatable { case auto, v1, v2 }
        public var url = "http://127.0.0.1:8086"
        /// `auto` asks `/ping` which server answers.
        public var api: API = .auto
        /// v1 database, v2 bucket.
        public var database = "cmcd-metrics"
        /// v1 retention policy ("" is the database's default).
        public var retentionPolicy = ""
        /// v2 organisation.
        public var org = ""
        /// Sent as `Authorization: Token ...` (a secret).
        public var token = ""
        /// Write the `cloudfront_logs` measurement (every request), not only findings.
        public var writeRaw = true
        /// Write the `cmcd_qoe` measurement (each cohort's closed window).
        public var writeQoE = true
        /// Points per HTTP write.
        public var batchSize = 5_000
        /// A partly filled batch is written after this long.
        public var flushIntervalMs: Int64 = 1_000
        /// Points buffered before the daemon waits for InfluxDB (backpressure).
        public var maxBufferedPoints = 100_000
        public var gzip = false
        public var timeoutMs: Int64 = 10_000
        public var verifyTLS = true
        /// A write still failing after this long is a final failure: the daemon stops without
        /// committing the records behind it.
        public var maxRetryMs: Int64 = 300_000
        public init() {}

        /// `url` without a trailing slash, for appending API paths.
        public var baseURL: String { url.hasSuffix("/") ? String(url.dropLast()) : url }
    }

    /// The alerts table (`alerts`): episodes and their notification outbox.
    public struct Alerts: Sendable, Equatable {
        /// `sqlite:PATH` or `postgres://user:password@host:port/database` ("" disables).
        public var url = "sqlite:cmcd-sentinel.db"
        /// Resolved alerts older than this many days are deleted (0 keeps them).
        public var retentionDays = 30
        /// Detection state is checkpointed in this store with each commit, so that a restart
        /// resumes where it stopped instead of re-reading the sessions' past.
        public var checkpoints = true
        public init() {}
    }

    /// A webhook endpoint (`webhooks[]`); which findings it gets is decided by the rules' routes.
    public struct Webhook: Sendable, Equatable {
        public var name = ""
        public var url = ""
        /// Standard Webhooks signing secrets (`whsec_` + base64, or any text); the first signs,
        /// all sign during a rotation. Empty: unsigned.
        public var secrets: [String] = []
        /// Extra static headers.
        public var headers: [String: String] = [:]
        public var timeoutMs: Int64 = 10_000
        /// Deliveries in flight at once to this endpoint.
        public var maxConcurrency = 4
        /// A notification still undelivered after this long is marked dead.
        public var maxAgeMs: Int64 = 86_400_000
        public var verifyTLS = true
        public init() {}
    }

    /// The MCP server (`mcp`).
    public struct MCP: Sendable, Equatable {
        /// `host:port` for Streamable HTTP (`/mcp`); empty: stdio only.
        public var httpListen = ""
        /// Bearer token required on HTTP (a secret).
        public var token = ""
        /// Most MCP sessions (clients) held at once over HTTP.
        public var maxSessions: Int64 = 64
        /// An HTTP session unused for this long is closed; its client must initialize again.
        public var idleTimeoutMs: Int64 = 1_800_000
        /// Browser origins allowed to call the HTTP server (`https://host[:port]`, or `:*` for
        /// any port); others get 403. Loopback origins are always allowed on a loopback address.
        public var allowedOrigins: [String] = []
        /// `Host` header values allowed (`name[:port]` or `name:*`); empty: any on a non-loopback
        /// address, the loopback names on a loopback one.
        public var allowedHosts: [String] = []
        /// More bearer tokens, by name (the name is recorded as a silence's creator); `token`,
        /// when set, is the one named `default`.
        public var tokens: [String: String] = [:]
        /// Calls one token may make in a minute over HTTP (429 beyond).
        public var rateLimitPerMinute: Int64 = 600
        /// The tool groups offered (`mcp.tools.enabled`).
        public var toolGroups: [String] = MCP.allToolGroups
        /// Authorization servers named in the OAuth protected resource metadata
        /// (`/.well-known/oauth-protected-resource`).
        public var authorizationServers: [String] = []
        /// The tool groups: the old tool's history questions, live anomalies, incidents,
        /// silences (their write tools still need `--allow-writes`) and session charts.
        public static let allToolGroups = ["history", "anomalies", "incidents", "silences", "charts"]
        public init() {}

        /// Every token by name: `token` as `default`, then `tokens`.
        public var namedTokens: [String: String] {
            var all = tokens
            if !token.isEmpty { all["default"] = token }
            return all
        }
    }

    public var kafka = Kafka()
    public var input = Input()
    public var mcp = MCP()
    /// nil: no InfluxDB.
    public var influx: Influx?
    /// nil: no alerts table (and no webhooks).
    public var kinesis = Kinesis()
    public var alerts: Alerts? = Alerts()
    public var webhooks: [Webhook] = []
    /// Rules file path.
    public var rules = "rules/default.yaml"
    /// Findings as JSON lines on standard output.
    public var stdout = true
    /// `host:port` for `/metrics` and `/healthz`; empty disables.
    public var httpListen = "127.0.0.1:9464"
    /// Named bearer tokens for the HTTP API (`/api/v1/silences`); none: the API is off.
    public var httpTokens: [String: String] = [:]

    public init() {}

    /// Every key, its environment variable (`-`: the file only), and what it means: the
    /// configuration reference, derived from the tables that read the keys.
    public static var keys: [(key: String, environment: String, meaning: String)] {
        ConfigTable.reference(topLevelKeys, prefix: "", environmentPrefix: "SENTINEL_")
            + [("influx", "-", "the InfluxDB sink; omit the section (or set influx.url empty) to disable")]
            + ConfigTable.reference(influxKeys, prefix: "influx.", environmentPrefix: "SENTINEL_INFLUX_")
            + ConfigTable.reference(alertsKeys, prefix: "alerts.", environmentPrefix: "SENTINEL_ALERTS_")
            + ConfigTable.reference(webhookKeys, prefix: "webhooks[].", environmentPrefix: "SENTINEL_WEBHOOKS_<i>_")
    }

    /// The keys outside the sink sections: Kafka, input, rules, output, HTTP and MCP.
    static var topLevelKeys: [ConfigKey<SentinelConfiguration>] {
        [
            .string("kafka.brokers", \.kafka.brokers, "bootstrap brokers, comma separated"),
            .string("kafka.topic", \.kafka.topic, "topic with the CMCD log records"),
            .string("kafka.group_id", \.kafka.groupID, "consumer group"),
            .string(
                "kafka.instance_id", \.kafka.instanceID,
                "static group membership (group.instance.id): a restart gets its partitions back at once; unique per daemon; empty: dynamic"),
            .mapping("kafka.properties", \.kafka.properties, "librdkafka properties, passed through (a mapping)", secret: false),
            .custom(
                "kafka.partitions", "read these partitions without a group rebalance (comma separated); empty joins the group",
                read: { node, config throws(ValidationError) in
                    config.kafka.partitions = try node.elements().map { element throws(ValidationError) in Int32(try element.integer(in: 0...100_000)) }
                },
                parse: { text, node, config throws(ValidationError) in
                    config.kafka.partitions = try text.split(separator: ",").map { part throws(ValidationError) in
                        guard let n = Int32(part.trimmingCharacters(in: " ")), n >= 0 else { throw node.error("'\(part)' is not a partition number") }
                        return n
                    }
                },
                show: { $0.kafka.partitions.isEmpty ? "(group)" : $0.kafka.partitions.map(String.init).joined(separator: ",") }),
            .string(
                "kafka.dead_letter_topic", \.kafka.deadLetterTopic,
                "topic for records that cannot be parsed, with the reason in a header; empty disables", empty: "(disabled)"),
            .custom(
                "input.source", "where records come from: kafka or kinesis",
                read: { node, config throws(ValidationError) in config.input.source = try source(node.string(), node) },
                parse: { text, node, config throws(ValidationError) in config.input.source = try source(text, node) },
                show: { $0.input.source.rawValue }),
            .string("kinesis.stream", \.kinesis.stream, "Kinesis stream with the CloudFront real-time log records (input.source: kinesis)"),
            .string("kinesis.region", \.kinesis.region, "AWS region of the stream and the lease table", empty: "(AWS_REGION, else us-east-1)"),
            .string("kinesis.endpoint", \.kinesis.endpoint, "Kinesis endpoint URL", empty: "(AWS's for the region)"),
            .string(
                "kinesis.dynamodb_endpoint", \.kinesis.dynamodbEndpoint, "DynamoDB endpoint URL of the lease table",
                empty: "(kinesis.endpoint when set, else AWS's for the region)"),
            .string("kinesis.lease_table", \.kinesis.leaseTable, "DynamoDB table of the shard leases (Kinesis Client Library layout)"),
            .integer("kinesis.failover_ms", \.kinesis.failoverMs, 1_000...600_000, "a shard lease not renewed for this long is taken by another daemon"),
            .bool(
                "kinesis.sessions_span_shards", \.kinesis.sessionsSpanShards,
                "a session's records may be in any shard (CloudFront's own partition keys): one daemon reads them all; false: the stream is keyed by session id and daemons share the shards"),
            .custom(
                "input.format", "cloudfront, json or cmcd", read: { node, config throws(ValidationError) in config.input.format = try format(node.string(), node) },
                parse: { text, node, config throws(ValidationError) in config.input.format = try format(text, node) },
                show: { $0.input.format.rawValue }),
            .custom(
                "input.fields", "CloudFront fields in wire order (a list; comma separated in the environment)",
                read: { node, config throws(ValidationError) in config.input.fields = try fields(node.stringList(), node) },
                parse: { text, node, config throws(ValidationError) in
                    config.input.fields = try fields(text.split(separator: ",").map { $0.trimmingCharacters(in: " ") }, node)
                },
                show: { $0.input.fields.names.joined(separator: ",") }),
            .string("rules", \.rules, "rules file"),
            .bool("output.stdout", \.stdout, "print findings as JSON lines on standard output"),
            .string(
                "http.listen", \.httpListen, "host:port for /metrics and /healthz (port 0: any free port, logged); empty disables", empty: "(disabled)"),
            .mapping(
                "http.tokens", \.httpTokens,
                "named bearer tokens for the silences API on that port (a mapping name: token; NAME=TOKEN,... in the environment; secret); none: the API is off",
                secret: true, empty: "(none: the silences API is off)"),
        ] + mcpKeys
    }

    /// Loads `yaml` (nil: no file) and applies `environment` overrides.
    public static func load(yaml: String?, file: String, environment: [String: String]) throws(ValidationError) -> SentinelConfiguration {
        var config = SentinelConfiguration()
        let root = try YAMLValue.parse(yaml ?? "", file: file)
        try ConfigTable.checkKeys(topLevelKeys, in: root, extra: ["influx", "alerts", "webhooks"])
        try ConfigTable.read(topLevelKeys, from: root, into: &config)
        try loadSinks(root, into: &config)
        try ConfigTable.override(topLevelKeys, environment: environment, prefix: "SENTINEL_", into: &config)
        try applySinkEnvironment(environment, to: &config)
        try config.validate(root)
        return config
    }

    func validate(_ root: YAMLValue) throws(ValidationError) {
        if input.source == .kinesis {
            if kinesis.stream.isEmpty { throw root["kinesis"]["stream"].error("must not be empty") }
            if kinesis.leaseTable.isEmpty { throw root["kinesis"]["lease_table"].error("must not be empty") }
            for (key, value) in [("endpoint", kinesis.endpoint), ("dynamodb_endpoint", kinesis.dynamodbEndpoint)] where !value.isEmpty {
                guard value.hasPrefix("http://") || value.hasPrefix("https://") else { throw root["kinesis"][key].error("'\(value)' is not an http(s) URL") }
            }
            if !kafka.deadLetterTopic.isEmpty { throw root["kafka"]["dead_letter_topic"].error("is for input.source: kafka") }
        }
        if kafka.brokers.isEmpty { throw root["kafka"]["brokers"].error("must not be empty") }
        for broker in kafka.brokers.split(separator: ",") {
            guard HostPort(String(broker)) != nil else { throw root["kafka"]["brokers"].error("'\(broker)' is not host:port") }
        }
        if kafka.topic.isEmpty { throw root["kafka"]["topic"].error("must not be empty") }
        if kafka.groupID.isEmpty { throw root["kafka"]["group_id"].error("must not be empty") }
        if !kafka.deadLetterTopic.isEmpty, kafka.deadLetterTopic == kafka.topic {
            throw root["kafka"]["dead_letter_topic"].error("must differ from kafka.topic")
        }
        if !httpListen.isEmpty, HostPort(httpListen, listening: true) == nil { throw root["http"]["listen"].error("'\(httpListen)' is not host:port") }
        try Self.validateTokens(httpTokens, root["http"]["tokens"])
        try validateSinks(root)
    }

    /// Named bearer tokens: names of letters, digits, `-`, `_`, `.` (at most 64), tokens of at
    /// least 16 characters.
    static func validateTokens(_ tokens: [String: String], _ node: YAMLValue) throws(ValidationError) {
        for (name, token) in tokens.sorted(by: { $0.key < $1.key }) {
            let nameOK = (1...64).contains(name.utf8.count) && name.utf8.allSatisfy { byte in
                byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || (0x30...0x39).contains(byte)
                    || (0x41...0x5a).contains(byte) || (0x61...0x7a).contains(byte)
            }
            guard nameOK else { throw node.error("'\(name.prefix(40))' is not a token name (letters, digits, - _ ., at most 64)") }
            guard token.utf8.count >= 16 else { throw node.error("token \(name) is shorter than 16 characters") }
        }
    }

    static func format(_ text: String, _ node: YAMLValue) throws(ValidationError) -> RecordFormat {
        guard let format = RecordFormat(rawValue: text) else { throw node.error("must be cloudfront, json or cmcd") }
        return format
    }

    static func source(_ text: String, _ node: YAMLValue) throws(ValidationError) -> Input.Source {
        guard let source = Input.Source(rawValue: text) else { throw node.error("must be kafka or kinesis") }
        return source
    }

    static func fields(_ names: [String], _ node: YAMLValue) throws(ValidationError) -> CloudFrontFields {
        do { return try CloudFrontFields(names) } catch { throw node.error(error.description) }
    }

    /// The effective configuration as YAML-ish lines, secrets masked.
    public var effectiveDescription: [String] {
        ConfigTable.describe(Self.topLevelKeys, self, prefix: "") + sinkDescription
    }

    /// Property names whose values are secrets.
    public static func isSecret(_ key: String) -> Bool {
        let k = key.lowercased()
        return k.contains("password") || k.contains("secret") || k.contains("token") || k.hasSuffix(".key")
            || k.contains("key.pem") || k.contains("sasl.oauthbearer.config")
    }
}

/// A `host:port` pair.
public struct HostPort: Sendable, Equatable {
    public var host: String
    public var port: Int

    /// `listening`: an address to listen on, where port 0 means any free port (the one bound
    /// is logged); elsewhere a port is 1 to 65535.
    public init?(_ text: String, listening: Bool = false) {
        let trimmed = text.trimmingCharacters(in: " ")
        guard let colon = trimmed.lastIndex(of: ":"), let port = Int(trimmed[trimmed.index(after: colon)...]),
            ((listening ? 0 : 1)...65535).contains(port)
        else { return nil }
        var host = String(trimmed[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.host = host
        self.port = port
    }
}

extension StringProtocol {
    /// The text without the given characters (by Unicode scalar) at either end.
    public func trimmingCharacters(in set: String) -> String {
        let scalars = Set(set.unicodeScalars)
        var s = Substring(self)
        while let f = s.unicodeScalars.first, scalars.contains(f) { s = Substring(s.unicodeScalars.dropFirst()) }
        while let l = s.unicodeScalars.last, scalars.contains(l) { s = Substring(s.unicodeScalars.dropLast()) }
        return String(s)
    }
}
