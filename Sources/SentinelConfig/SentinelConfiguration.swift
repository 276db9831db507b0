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
        public var format: RecordFormat = .cloudfront
        public var fields: CloudFrontFields = .default
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

    /// Every key, its environment variable, and what it means (the configuration reference).
    public static let keys: [(key: String, environment: String, meaning: String)] = [
        ("kafka.brokers", "SENTINEL_KAFKA_BROKERS", "bootstrap brokers, comma separated"),
        ("kafka.topic", "SENTINEL_KAFKA_TOPIC", "topic with the CMCD log records"),
        ("kafka.group_id", "SENTINEL_KAFKA_GROUP_ID", "consumer group"),
        ("kafka.instance_id", "SENTINEL_KAFKA_INSTANCE_ID", "static group membership (group.instance.id): a restart gets its partitions back at once; unique per daemon; empty: dynamic"),
        ("kafka.properties", "-", "librdkafka properties, passed through (a mapping)"),
        ("kafka.partitions", "SENTINEL_KAFKA_PARTITIONS", "read these partitions without a group rebalance (comma separated); empty joins the group"),
        ("kafka.dead_letter_topic", "SENTINEL_KAFKA_DEAD_LETTER_TOPIC", "topic for records that cannot be parsed, with the reason in a header; empty disables"),
        ("input.format", "SENTINEL_INPUT_FORMAT", "cloudfront, json or cmcd"),
        ("input.fields", "SENTINEL_INPUT_FIELDS", "CloudFront fields in wire order (a list; comma separated in the environment)"),
        ("rules", "SENTINEL_RULES", "rules file"),
        ("output.stdout", "SENTINEL_OUTPUT_STDOUT", "print findings as JSON lines on standard output"),
        ("http.listen", "SENTINEL_HTTP_LISTEN", "host:port for /metrics and /healthz (port 0: any free port, logged); empty disables"),
        ("http.tokens", "SENTINEL_HTTP_TOKENS", "named bearer tokens for the silences API on that port (a mapping name: token; NAME=TOKEN,... in the environment; secret); none: the API is off"),
        ("influx", "-", "the InfluxDB sink; omit the section (or set influx.url empty) to disable"),
        ("influx.url", "SENTINEL_INFLUX_URL", "InfluxDB base URL, http:// or https://"),
        ("influx.api", "SENTINEL_INFLUX_API", "auto (ask /ping), v1 (/write) or v2 (/api/v2/write)"),
        ("influx.database", "SENTINEL_INFLUX_DATABASE", "v1 database or v2 bucket"),
        ("influx.retention_policy", "SENTINEL_INFLUX_RETENTION_POLICY", "v1 retention policy; empty uses the default"),
        ("influx.org", "SENTINEL_INFLUX_ORG", "v2 organisation"),
        ("influx.token", "SENTINEL_INFLUX_TOKEN", "API token, sent as Authorization: Token (secret)"),
        ("influx.write_raw", "SENTINEL_INFLUX_WRITE_RAW", "write every request to cloudfront_logs, not only findings"),
        ("influx.write_qoe", "SENTINEL_INFLUX_WRITE_QOE", "write each cohort's closed window to cmcd_qoe (live QoE rollups)"),
        ("influx.batch_size", "SENTINEL_INFLUX_BATCH_SIZE", "points per write"),
        ("influx.flush_interval_ms", "SENTINEL_INFLUX_FLUSH_INTERVAL_MS", "a partly filled batch is written after this long"),
        ("influx.max_buffered_points", "SENTINEL_INFLUX_MAX_BUFFERED_POINTS", "points held before the daemon waits for InfluxDB"),
        ("influx.gzip", "SENTINEL_INFLUX_GZIP", "gzip request bodies"),
        ("influx.timeout_ms", "SENTINEL_INFLUX_TIMEOUT_MS", "timeout of one write"),
        ("influx.verify_tls", "SENTINEL_INFLUX_VERIFY_TLS", "verify the server certificate"),
        ("influx.max_retry_ms", "SENTINEL_INFLUX_MAX_RETRY_MS", "how long a failing write is retried before the daemon stops uncommitted"),
        ("alerts.url", "SENTINEL_ALERTS_URL", "sqlite:PATH or postgres://user:password@host:port/db; empty disables the alerts table and webhooks"),
        ("alerts.retention_days", "SENTINEL_ALERTS_RETENTION_DAYS", "resolved alerts older than this are deleted; 0 keeps them"),
        ("alerts.checkpoints", "SENTINEL_ALERTS_CHECKPOINTS", "checkpoint each partition's detection state here, so a restart resumes where it stopped"),
        ("webhooks[].name", "SENTINEL_WEBHOOKS_<i>_NAME", "endpoint name, referred to by routes in the rules"),
        ("webhooks[].url", "SENTINEL_WEBHOOKS_<i>_URL", "endpoint URL"),
        ("webhooks[].secret", "SENTINEL_WEBHOOKS_<i>_SECRET", "signing secret, or a list of them during a rotation (secret)"),
        ("webhooks[].headers", "-", "extra static headers (a mapping)"),
        ("webhooks[].timeout_ms", "SENTINEL_WEBHOOKS_<i>_TIMEOUT_MS", "timeout of one delivery attempt"),
        ("webhooks[].max_concurrency", "SENTINEL_WEBHOOKS_<i>_MAX_CONCURRENCY", "deliveries in flight at once to this endpoint"),
        ("webhooks[].max_age_ms", "SENTINEL_WEBHOOKS_<i>_MAX_AGE_MS", "an undelivered notification is dead after this long"),
        ("webhooks[].verify_tls", "SENTINEL_WEBHOOKS_<i>_VERIFY_TLS", "verify the server certificate"),
        ("mcp.http_listen", "SENTINEL_MCP_HTTP_LISTEN", "host:port for the MCP server's Streamable HTTP transport (cmcd-sentinel mcp --http overrides)"),
        ("mcp.token", "SENTINEL_MCP_TOKEN", "bearer token the MCP HTTP transport requires (secret)"),
        ("mcp.max_sessions", "SENTINEL_MCP_MAX_SESSIONS", "most MCP clients (sessions) served at once over HTTP; more get 503 until one ends or expires"),
        ("mcp.idle_timeout_ms", "SENTINEL_MCP_IDLE_TIMEOUT_MS", "an MCP HTTP session unused this long is closed (the client gets 404 and initializes again)"),
        ("mcp.allowed_origins", "SENTINEL_MCP_ALLOWED_ORIGINS", "browser origins allowed over HTTP, e.g. https://assistant.example.com (a list; comma separated in the environment); others get 403"),
        ("mcp.allowed_hosts", "SENTINEL_MCP_ALLOWED_HOSTS", "Host header values allowed over HTTP (name[:port] or name:*; a list); empty: any beyond loopback"),
        ("mcp.tokens", "SENTINEL_MCP_TOKENS", "more bearer tokens by name (a mapping name: token; NAME=TOKEN,... in the environment; secret); mcp.token is the one named default"),
        ("mcp.rate_limit_per_minute", "SENTINEL_MCP_RATE_LIMIT_PER_MINUTE", "requests one token may make in a minute over HTTP; more get 429 with Retry-After"),
        ("mcp.tools.enabled", "SENTINEL_MCP_TOOLS_ENABLED", "tool groups offered: history, anomalies, incidents, silences, charts (a list; comma separated in the environment)"),
        ("mcp.authorization_servers", "SENTINEL_MCP_AUTHORIZATION_SERVERS", "OAuth authorization servers named in /.well-known/oauth-protected-resource (a list)"),
    ]

    /// Loads `yaml` (nil: no file) and applies `environment` overrides.
    public static func load(yaml: String?, file: String, environment: [String: String]) throws(ValidationError) -> SentinelConfiguration {
        var config = SentinelConfiguration()
        let root = try YAMLValue.parse(yaml ?? "", file: file)
        try root.keys(allowed: ["kafka", "input", "rules", "output", "http", "influx", "alerts", "webhooks", "mcp"])
        let kafka = root["kafka"]
        try kafka.keys(allowed: ["brokers", "topic", "group_id", "instance_id", "properties", "partitions", "dead_letter_topic"])
        config.kafka.instanceID = try kafka["instance_id"].string(default: "")
        config.kafka.deadLetterTopic = try kafka["dead_letter_topic"].string(default: "")
        config.kafka.brokers = try kafka["brokers"].string(default: config.kafka.brokers)
        config.kafka.topic = try kafka["topic"].string(default: config.kafka.topic)
        config.kafka.groupID = try kafka["group_id"].string(default: config.kafka.groupID)
        for (key, value) in try kafka["properties"].members() {
            guard value.isScalar else { throw value.error("must be a string") }
            config.kafka.properties[key] = try value.string()
        }
        if kafka["partitions"].exists {
            config.kafka.partitions = try kafka["partitions"].elements().map { element throws(ValidationError) in
                Int32(try element.integer(in: 0...100_000))
            }
        }
        let input = root["input"]
        try input.keys(allowed: ["format", "fields"])
        if input["format"].exists { config.input.format = try format(input["format"].string(), input["format"]) }
        if input["fields"].exists { config.input.fields = try fields(input["fields"].stringList(), input["fields"]) }
        config.rules = try root["rules"].string(default: config.rules)
        let output = root["output"]
        try output.keys(allowed: ["stdout"])
        config.stdout = try output["stdout"].bool(default: true)
        let http = root["http"]
        try http.keys(allowed: ["listen", "tokens"])
        config.httpListen = try http["listen"].string(default: config.httpListen)
        for (name, value) in try http["tokens"].members() {
            guard value.isScalar else { throw value.error("must be a string") }
            config.httpTokens[name] = try value.string()
        }
        try loadSinks(root, into: &config)

        // Environment overrides.
        func env(_ name: String) -> (value: String, node: YAMLValue)? {
            environment[name].map { ($0, YAMLValue.environment(name)) }
        }
        if let (v, _) = env("SENTINEL_KAFKA_BROKERS") { config.kafka.brokers = v }
        if let (v, _) = env("SENTINEL_KAFKA_TOPIC") { config.kafka.topic = v }
        if let (v, _) = env("SENTINEL_KAFKA_GROUP_ID") { config.kafka.groupID = v }
        if let (v, _) = env("SENTINEL_KAFKA_INSTANCE_ID") { config.kafka.instanceID = v }
        if let (v, _) = env("SENTINEL_KAFKA_DEAD_LETTER_TOPIC") { config.kafka.deadLetterTopic = v }
        if let (v, node) = env("SENTINEL_KAFKA_PARTITIONS") {
            config.kafka.partitions = try v.split(separator: ",").map { part throws(ValidationError) in
                guard let n = Int32(part.trimmingCharacters(in: " ")), n >= 0 else { throw node.error("'\(part)' is not a partition number") }
                return n
            }
        }
        if let (v, node) = env("SENTINEL_INPUT_FORMAT") { config.input.format = try format(v, node) }
        if let (v, node) = env("SENTINEL_INPUT_FIELDS") {
            config.input.fields = try fields(v.split(separator: ",").map { $0.trimmingCharacters(in: " ") }, node)
        }
        if let (v, _) = env("SENTINEL_RULES") { config.rules = v }
        if let v = try environmentBool("SENTINEL_OUTPUT_STDOUT", environment) { config.stdout = v }
        if let (v, _) = env("SENTINEL_HTTP_LISTEN") { config.httpListen = v }
        if let (v, node) = env("SENTINEL_HTTP_TOKENS") {
            config.httpTokens = [:]
            for pair in v.split(separator: ",") {
                guard let equals = pair.firstIndex(of: "=") else { throw node.error("each token must be NAME=TOKEN") }
                config.httpTokens[String(pair[..<equals]).trimmingCharacters(in: " ")] = String(pair[pair.index(after: equals)...])
            }
        }
        try applySinkEnvironment(environment, to: &config)
        try config.validate(root)
        return config
    }

    func validate(_ root: YAMLValue) throws(ValidationError) {
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

    static func fields(_ names: [String], _ node: YAMLValue) throws(ValidationError) -> CloudFrontFields {
        do { return try CloudFrontFields(names) } catch { throw node.error(error.description) }
    }

    /// The effective configuration as YAML-ish lines, secrets masked.
    public var effectiveDescription: [String] {
        var lines = [
            "kafka.brokers: \(kafka.brokers)", "kafka.topic: \(kafka.topic)", "kafka.group_id: \(kafka.groupID)", "kafka.instance_id: \(kafka.instanceID)",
            "kafka.partitions: \(kafka.partitions.isEmpty ? "(group)" : kafka.partitions.map(String.init).joined(separator: ","))",
            "kafka.dead_letter_topic: \(kafka.deadLetterTopic.isEmpty ? "(disabled)" : kafka.deadLetterTopic)",
        ]
        for (key, value) in kafka.properties.sorted(by: { $0.key < $1.key }) {
            lines.append("kafka.properties.\(key): \(Self.isSecret(key) ? "*****" : value)")
        }
        lines += [
            "input.format: \(input.format.rawValue)", "input.fields: \(input.fields.names.joined(separator: ","))",
            "rules: \(rules)", "output.stdout: \(stdout)", "http.listen: \(httpListen.isEmpty ? "(disabled)" : httpListen)",
            "http.tokens: \(httpTokens.isEmpty ? "(none: the silences API is off)" : httpTokens.keys.sorted().map { "\($0)=*****" }.joined(separator: ","))",
        ]
        return lines + sinkDescription
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
