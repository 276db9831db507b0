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

    public var kafka = Kafka()
    public var input = Input()
    /// Rules file path.
    public var rules = "rules/default.yaml"
    /// Findings as JSON lines on standard output.
    public var stdout = true
    /// `host:port` for `/metrics` and `/healthz`; empty disables.
    public var httpListen = "127.0.0.1:9464"

    public init() {}

    /// Every key, its environment variable, and what it means (the configuration reference).
    public static let keys: [(key: String, environment: String, meaning: String)] = [
        ("kafka.brokers", "SENTINEL_KAFKA_BROKERS", "bootstrap brokers, comma separated"),
        ("kafka.topic", "SENTINEL_KAFKA_TOPIC", "topic with the CMCD log records"),
        ("kafka.group_id", "SENTINEL_KAFKA_GROUP_ID", "consumer group"),
        ("kafka.properties", "-", "librdkafka properties, passed through (a mapping)"),
        ("kafka.partitions", "SENTINEL_KAFKA_PARTITIONS", "read these partitions without a group rebalance (comma separated); empty joins the group"),
        ("kafka.dead_letter_topic", "SENTINEL_KAFKA_DEAD_LETTER_TOPIC", "topic for records that cannot be parsed, with the reason in a header; empty disables"),
        ("input.format", "SENTINEL_INPUT_FORMAT", "cloudfront, json or cmcd"),
        ("input.fields", "SENTINEL_INPUT_FIELDS", "CloudFront fields in wire order (a list; comma separated in the environment)"),
        ("rules", "SENTINEL_RULES", "rules file"),
        ("output.stdout", "SENTINEL_OUTPUT_STDOUT", "print findings as JSON lines on standard output"),
        ("http.listen", "SENTINEL_HTTP_LISTEN", "host:port for /metrics and /healthz; empty disables"),
    ]

    /// Sections of the documented configuration this version does not implement yet: they
    /// are rejected rather than silently ignored, so nobody believes data is going there.
    static let unavailableSections: [String: String] = [
        "influx": "the InfluxDB sink is not available in this version",
        "alerts": "the alerts table is not available in this version",
        "webhooks": "webhooks are not available in this version",
        "mcp": "the MCP server is not available in this version",
    ]

    /// Loads `yaml` (nil: no file) and applies `environment` overrides.
    public static func load(yaml: String?, file: String, environment: [String: String]) throws(ValidationError) -> SentinelConfiguration {
        var config = SentinelConfiguration()
        let root = try YAMLValue.parse(yaml ?? "", file: file)
        try root.keys(allowed: Set(["kafka", "input", "rules", "output", "http"]).union(unavailableSections.keys))
        for (section, reason) in unavailableSections.sorted(by: { $0.key < $1.key }) where root[section].exists {
            throw root[section].error(reason)
        }
        let kafka = root["kafka"]
        try kafka.keys(allowed: ["brokers", "topic", "group_id", "properties", "partitions", "dead_letter_topic"])
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
        try http.keys(allowed: ["listen"])
        config.httpListen = try http["listen"].string(default: config.httpListen)

        // Environment overrides.
        func env(_ name: String) -> (value: String, node: YAMLValue)? {
            environment[name].map { ($0, YAMLValue.environment(name)) }
        }
        if let (v, _) = env("SENTINEL_KAFKA_BROKERS") { config.kafka.brokers = v }
        if let (v, _) = env("SENTINEL_KAFKA_TOPIC") { config.kafka.topic = v }
        if let (v, _) = env("SENTINEL_KAFKA_GROUP_ID") { config.kafka.groupID = v }
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
        if let (v, node) = env("SENTINEL_OUTPUT_STDOUT") {
            switch v.lowercased() {
            case "true", "1", "yes": config.stdout = true
            case "false", "0", "no": config.stdout = false
            default: throw node.error("must be true or false")
            }
        }
        if let (v, _) = env("SENTINEL_HTTP_LISTEN") { config.httpListen = v }
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
        if !httpListen.isEmpty, HostPort(httpListen) == nil { throw root["http"]["listen"].error("'\(httpListen)' is not host:port") }
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
            "kafka.brokers: \(kafka.brokers)", "kafka.topic: \(kafka.topic)", "kafka.group_id: \(kafka.groupID)",
            "kafka.partitions: \(kafka.partitions.isEmpty ? "(group)" : kafka.partitions.map(String.init).joined(separator: ","))",
            "kafka.dead_letter_topic: \(kafka.deadLetterTopic.isEmpty ? "(disabled)" : kafka.deadLetterTopic)",
        ]
        for (key, value) in kafka.properties.sorted(by: { $0.key < $1.key }) {
            lines.append("kafka.properties.\(key): \(Self.isSecret(key) ? "*****" : value)")
        }
        lines += [
            "input.format: \(input.format.rawValue)", "input.fields: \(input.fields.names.joined(separator: ","))",
            "rules: \(rules)", "output.stdout: \(stdout)", "http.listen: \(httpListen.isEmpty ? "(disabled)" : httpListen)",
        ]
        return lines
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

    public init?(_ text: String) {
        let trimmed = text.trimmingCharacters(in: " ")
        guard let colon = trimmed.lastIndex(of: ":"), let port = Int(trimmed[trimmed.index(after: colon)...]),
            (1...65535).contains(port)
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
