import Foundation
import SentinelYAML

/// The sink sections of the configuration: `influx`, `alerts`, `webhooks`.
extension SentinelConfiguration {
    static func loadSinks(_ root: YAMLValue, into config: inout SentinelConfiguration) throws(ValidationError) {
        try loadMCP(root, into: &config)
        let influx = root["influx"]
        if influx.exists {
            try influx.keys(allowed: [
                "url", "api", "database", "retention_policy", "org", "token", "write_raw", "write_qoe", "batch_size", "flush_interval_ms",
                "max_buffered_points", "gzip", "timeout_ms", "verify_tls", "max_retry_ms",
            ])
            var i = Influx()
            i.url = try influx["url"].string(default: i.url)
            if influx["api"].exists { i.api = try api(influx["api"].string(), influx["api"]) }
            i.database = try influx["database"].string(default: i.database)
            i.retentionPolicy = try influx["retention_policy"].string(default: "")
            i.org = try influx["org"].string(default: "")
            i.token = try influx["token"].string(default: "")
            i.writeRaw = try influx["write_raw"].bool(default: true)
            i.writeQoE = try influx["write_qoe"].bool(default: true)
            i.batchSize = Int(try influx["batch_size"].integer(in: 1...100_000, default: Int64(i.batchSize)))
            i.flushIntervalMs = try influx["flush_interval_ms"].integer(in: 10...600_000, default: i.flushIntervalMs)
            i.maxBufferedPoints = Int(try influx["max_buffered_points"].integer(in: 1...10_000_000, default: Int64(i.maxBufferedPoints)))
            i.gzip = try influx["gzip"].bool(default: false)
            i.timeoutMs = try influx["timeout_ms"].integer(in: 100...600_000, default: i.timeoutMs)
            i.verifyTLS = try influx["verify_tls"].bool(default: true)
            i.maxRetryMs = try influx["max_retry_ms"].integer(in: 0...86_400_000, default: i.maxRetryMs)
            config.influx = i.url.isEmpty ? nil : i
        }
        let alerts = root["alerts"]
        if alerts.exists {
            try alerts.keys(allowed: ["url", "retention_days", "checkpoints"])
            var a = Alerts()
            a.url = try alerts["url"].string(default: a.url)
            a.retentionDays = Int(try alerts["retention_days"].integer(in: 0...36_500, default: Int64(a.retentionDays)))
            a.checkpoints = try alerts["checkpoints"].bool(default: a.checkpoints)
            config.alerts = a.url.isEmpty ? nil : a
        }
        if root["webhooks"].exists {
            config.webhooks = try root["webhooks"].elements().map { node throws(ValidationError) in
                try node.keys(allowed: ["name", "url", "secret", "headers", "timeout_ms", "max_concurrency", "max_age_ms", "verify_tls"])
                var w = Webhook()
                w.name = try node["name"].string()
                w.url = try node["url"].string()
                if node["secret"].exists {
                    w.secrets = node["secret"].isScalar ? [try node["secret"].string()] : try node["secret"].stringList()
                    w.secrets.removeAll { $0.isEmpty }
                }
                for (key, value) in try node["headers"].members() {
                    guard value.isScalar else { throw value.error("must be a string") }
                    w.headers[key] = try value.string()
                }
                w.timeoutMs = try node["timeout_ms"].integer(in: 100...600_000, default: w.timeoutMs)
                w.maxConcurrency = Int(try node["max_concurrency"].integer(in: 1...256, default: Int64(w.maxConcurrency)))
                w.maxAgeMs = try node["max_age_ms"].integer(in: 1_000...(30 * 86_400_000), default: w.maxAgeMs)
                w.verifyTLS = try node["verify_tls"].bool(default: true)
                return w
            }
        }
    }

    static func loadMCP(_ root: YAMLValue, into config: inout SentinelConfiguration) throws(ValidationError) {
        let mcp = root["mcp"]
        try mcp.keys(allowed: [
            "http_listen", "token", "max_sessions", "idle_timeout_ms", "allowed_origins", "allowed_hosts", "tokens", "rate_limit_per_minute", "tools",
            "authorization_servers",
        ])
        for (name, value) in try mcp["tokens"].members() {
            guard value.isScalar else { throw value.error("must be a string") }
            config.mcp.tokens[name] = try value.string()
        }
        config.mcp.rateLimitPerMinute = try mcp["rate_limit_per_minute"].integer(in: 1...1_000_000, default: config.mcp.rateLimitPerMinute)
        try mcp["tools"].keys(allowed: ["enabled"])
        if mcp["tools"]["enabled"].exists {
            config.mcp.toolGroups = try mcp["tools"]["enabled"].stringList()
            for group in config.mcp.toolGroups where !SentinelConfiguration.MCP.allToolGroups.contains(group) {
                throw mcp["tools"]["enabled"].error("unknown tool group '\(group.prefix(40))' (\(SentinelConfiguration.MCP.allToolGroups.joined(separator: ", ")))")
            }
        }
        if mcp["authorization_servers"].exists { config.mcp.authorizationServers = try mcp["authorization_servers"].stringList() }
        config.mcp.httpListen = try mcp["http_listen"].string(default: "")
        config.mcp.token = try mcp["token"].string(default: "")
        config.mcp.maxSessions = try mcp["max_sessions"].integer(in: 1...10_000, default: config.mcp.maxSessions)
        config.mcp.idleTimeoutMs = try mcp["idle_timeout_ms"].integer(in: 1_000...86_400_000, default: config.mcp.idleTimeoutMs)
        if mcp["allowed_origins"].exists { config.mcp.allowedOrigins = try mcp["allowed_origins"].stringList() }
        if mcp["allowed_hosts"].exists { config.mcp.allowedHosts = try mcp["allowed_hosts"].stringList() }
    }

    static func applySinkEnvironment(_ environment: [String: String], to config: inout SentinelConfiguration) throws(ValidationError) {
        func node(_ name: String) -> YAMLValue { YAMLValue.environment(name) }
        func integer(_ name: String, _ range: ClosedRange<Int64>) throws(ValidationError) -> Int64? {
            guard let text = environment[name] else { return nil }
            guard let n = Int64(text.trimmingCharacters(in: " ")), range.contains(n) else {
                throw node(name).error("must be a whole number from \(range.lowerBound) to \(range.upperBound)")
            }
            return n
        }
        func bool(_ name: String) throws(ValidationError) -> Bool? { try environmentBool(name, environment) }
        // Any SENTINEL_INFLUX_* variable enables the sink with defaults for the rest.
        if environment.keys.contains(where: { $0.hasPrefix("SENTINEL_INFLUX_") }) {
            var i = config.influx ?? Influx()
            if let v = environment["SENTINEL_INFLUX_URL"] { i.url = v }
            if let v = environment["SENTINEL_INFLUX_API"] { i.api = try api(v, node("SENTINEL_INFLUX_API")) }
            if let v = environment["SENTINEL_INFLUX_DATABASE"] { i.database = v }
            if let v = environment["SENTINEL_INFLUX_RETENTION_POLICY"] { i.retentionPolicy = v }
            if let v = environment["SENTINEL_INFLUX_ORG"] { i.org = v }
            if let v = environment["SENTINEL_INFLUX_TOKEN"] { i.token = v }
            if let v = try bool("SENTINEL_INFLUX_WRITE_RAW") { i.writeRaw = v }
            if let v = try bool("SENTINEL_INFLUX_WRITE_QOE") { i.writeQoE = v }
            if let v = try integer("SENTINEL_INFLUX_BATCH_SIZE", 1...100_000) { i.batchSize = Int(v) }
            if let v = try integer("SENTINEL_INFLUX_FLUSH_INTERVAL_MS", 10...600_000) { i.flushIntervalMs = v }
            if let v = try integer("SENTINEL_INFLUX_MAX_BUFFERED_POINTS", 1...10_000_000) { i.maxBufferedPoints = Int(v) }
            if let v = try bool("SENTINEL_INFLUX_GZIP") { i.gzip = v }
            if let v = try integer("SENTINEL_INFLUX_TIMEOUT_MS", 100...600_000) { i.timeoutMs = v }
            if let v = try bool("SENTINEL_INFLUX_VERIFY_TLS") { i.verifyTLS = v }
            if let v = try integer("SENTINEL_INFLUX_MAX_RETRY_MS", 0...86_400_000) { i.maxRetryMs = v }
            config.influx = i.url.isEmpty ? nil : i
        }
        if let v = environment["SENTINEL_MCP_HTTP_LISTEN"] { config.mcp.httpListen = v }
        if let v = environment["SENTINEL_MCP_TOKEN"] { config.mcp.token = v }
        if let v = try integer("SENTINEL_MCP_MAX_SESSIONS", 1...10_000) { config.mcp.maxSessions = v }
        if let v = try integer("SENTINEL_MCP_IDLE_TIMEOUT_MS", 1_000...86_400_000) { config.mcp.idleTimeoutMs = v }
        func list(_ name: String) -> [String]? {
            environment[name].map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
        }
        if let v = list("SENTINEL_MCP_ALLOWED_ORIGINS") { config.mcp.allowedOrigins = v }
        if let v = list("SENTINEL_MCP_TOKENS") {
            config.mcp.tokens = [:]
            for pair in v {
                guard let equals = pair.firstIndex(of: "=") else { throw node("SENTINEL_MCP_TOKENS").error("each token must be NAME=TOKEN") }
                config.mcp.tokens[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
            }
        }
        if let v = try integer("SENTINEL_MCP_RATE_LIMIT_PER_MINUTE", 1...1_000_000) { config.mcp.rateLimitPerMinute = v }
        if let v = list("SENTINEL_MCP_TOOLS_ENABLED") {
            for group in v where !SentinelConfiguration.MCP.allToolGroups.contains(group) {
                throw node("SENTINEL_MCP_TOOLS_ENABLED").error("unknown tool group '\(group.prefix(40))' (\(SentinelConfiguration.MCP.allToolGroups.joined(separator: ", ")))")
            }
            config.mcp.toolGroups = v
        }
        if let v = list("SENTINEL_MCP_AUTHORIZATION_SERVERS") { config.mcp.authorizationServers = v }
        if let v = list("SENTINEL_MCP_ALLOWED_HOSTS") { config.mcp.allowedHosts = v }
        if let v = environment["SENTINEL_ALERTS_URL"] {
            if v.isEmpty { config.alerts = nil } else { config.alerts = config.alerts ?? Alerts(); config.alerts!.url = v }
        }
        if let v = try integer("SENTINEL_ALERTS_RETENTION_DAYS", 0...36_500), config.alerts != nil { config.alerts!.retentionDays = Int(v) }
        if let v = try bool("SENTINEL_ALERTS_CHECKPOINTS"), config.alerts != nil { config.alerts!.checkpoints = v }
        // SENTINEL_WEBHOOKS_<i>_<KEY>: the i-th endpoint (added when i is the next index).
        for index in 0..<64 {
            let prefix = "SENTINEL_WEBHOOKS_\(index)_"
            guard environment.keys.contains(where: { $0.hasPrefix(prefix) }) else { continue }
            guard index <= config.webhooks.count else { throw node(prefix + "URL").error("webhook \(index) has no predecessor \(index - 1)") }
            if index == config.webhooks.count { config.webhooks.append(Webhook()) }
            if let v = environment[prefix + "NAME"] { config.webhooks[index].name = v }
            if let v = environment[prefix + "URL"] { config.webhooks[index].url = v }
            if let v = environment[prefix + "SECRET"] { config.webhooks[index].secrets = v.split(separator: " ").map(String.init) }
            if let v = try integer(prefix + "TIMEOUT_MS", 100...600_000) { config.webhooks[index].timeoutMs = v }
            if let v = try integer(prefix + "MAX_CONCURRENCY", 1...256) { config.webhooks[index].maxConcurrency = Int(v) }
            if let v = try integer(prefix + "MAX_AGE_MS", 1_000...(30 * 86_400_000)) { config.webhooks[index].maxAgeMs = v }
            if let v = try bool(prefix + "VERIFY_TLS") { config.webhooks[index].verifyTLS = v }
        }
    }

    func validateSinks(_ root: YAMLValue) throws(ValidationError) {
        if let influx {
            guard Self.isHTTPURL(influx.url) else { throw root["influx"]["url"].error("'\(influx.url)' is not an http:// or https:// URL") }
            if influx.database.isEmpty { throw root["influx"]["database"].error("must not be empty") }
            if influx.api == .v2, influx.org.isEmpty { throw root["influx"]["org"].error("must be set for the v2 API") }
        }
        if let alerts {
            guard alerts.url.hasPrefix("sqlite:") || alerts.url.hasPrefix("postgres://") || alerts.url.hasPrefix("postgresql://") else {
                throw root["alerts"]["url"].error("must be sqlite:PATH or postgres://user:password@host:port/database")
            }
            if alerts.url == "sqlite:" { throw root["alerts"]["url"].error("sqlite: needs a file path") }
        }
        var names = Set<String>()
        for (index, webhook) in webhooks.enumerated() {
            let node = root["webhooks"]
            if webhook.name.isEmpty { throw node.error("webhook \(index) needs a name") }
            guard names.insert(webhook.name).inserted else { throw node.error("webhook name '\(webhook.name)' is used twice") }
            guard Self.isHTTPURL(webhook.url) else { throw node.error("webhook '\(webhook.name)': '\(webhook.url)' is not an http:// or https:// URL") }
            for name in webhook.headers.keys where !name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") }) {
                throw node.error("webhook '\(webhook.name)': '\(name)' is not a header name")
            }
            for value in webhook.headers.values where value.utf8.contains(where: { $0 < 0x20 && $0 != 0x09 }) {
                throw node.error("webhook '\(webhook.name)': a header value has a control character")
            }
        }
        try Self.validateTokens(mcp.tokens, root["mcp"]["tokens"])
        if !mcp.httpListen.isEmpty, HostPort(mcp.httpListen, listening: true) == nil {
            throw root["mcp"]["http_listen"].error("'\(mcp.httpListen)' is not host:port")
        }
        for origin in mcp.allowedOrigins where !(origin.hasPrefix("http://") || origin.hasPrefix("https://")) || origin.dropFirst(8).contains("/") {
            throw root["mcp"]["allowed_origins"].error("'\(origin.prefix(80))' is not an origin (scheme://host[:port], no path)")
        }
        if !webhooks.isEmpty, alerts == nil {
            throw root["webhooks"].error("webhooks need the alerts table (alerts.url): notifications are kept there until delivered")
        }
    }

    /// A `true`/`false` (also 1/0, yes/no) environment variable, nil when unset.
    static func environmentBool(_ name: String, _ environment: [String: String]) throws(ValidationError) -> Bool? {
        guard let text = environment[name] else { return nil }
        switch text.lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default: throw YAMLValue.environment(name).error("must be true or false")
        }
    }

    static func isHTTPURL(_ text: String) -> Bool {
        guard let url = URLComponents(string: text), url.scheme == "http" || url.scheme == "https", let host = url.host else { return false }
        return !host.isEmpty
    }

    static func api(_ text: String, _ node: YAMLValue) throws(ValidationError) -> Influx.API {
        guard let api = Influx.API(rawValue: text) else { throw node.error("must be auto, v1 or v2") }
        return api
    }

    /// A URL with the password (`user:password@`) masked.
    public static func maskingPassword(_ url: String) -> String {
        guard let scheme = url.range(of: "://"), let at = url[scheme.upperBound...].lastIndex(of: "@") else { return url }
        let userInfo = url[scheme.upperBound..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return url }
        return String(url[..<userInfo.index(after: colon)]) + "*****" + String(url[at...])
    }

    var sinkDescription: [String] {
        var lines: [String] = []
        if let influx {
            lines += [
                "influx.url: \(Self.maskingPassword(influx.url))", "influx.api: \(influx.api.rawValue)", "influx.database: \(influx.database)",
                "influx.retention_policy: \(influx.retentionPolicy)", "influx.org: \(influx.org)",
                "influx.token: \(influx.token.isEmpty ? "" : "*****")", "influx.write_raw: \(influx.writeRaw)", "influx.write_qoe: \(influx.writeQoE)",
                "influx.batch_size: \(influx.batchSize)", "influx.flush_interval_ms: \(influx.flushIntervalMs)",
                "influx.max_buffered_points: \(influx.maxBufferedPoints)", "influx.gzip: \(influx.gzip)",
                "influx.timeout_ms: \(influx.timeoutMs)", "influx.verify_tls: \(influx.verifyTLS)", "influx.max_retry_ms: \(influx.maxRetryMs)",
            ]
        } else {
            lines.append("influx: (disabled)")
        }
        if let alerts {
            lines += ["alerts.url: \(Self.maskingPassword(alerts.url))", "alerts.retention_days: \(alerts.retentionDays)", "alerts.checkpoints: \(alerts.checkpoints)"]
        } else {
            lines.append("alerts: (disabled)")
        }
        lines += [
            "mcp.http_listen: \(mcp.httpListen.isEmpty ? "(stdio only)" : mcp.httpListen)",
            "mcp.token: \(mcp.token.isEmpty ? "" : "*****")",
            "mcp.max_sessions: \(mcp.maxSessions)", "mcp.idle_timeout_ms: \(mcp.idleTimeoutMs)",
            "mcp.allowed_origins: \(mcp.allowedOrigins.joined(separator: ","))", "mcp.allowed_hosts: \(mcp.allowedHosts.joined(separator: ","))",
            "mcp.tokens: \(mcp.tokens.keys.sorted().map { "\($0)=*****" }.joined(separator: ","))",
            "mcp.rate_limit_per_minute: \(mcp.rateLimitPerMinute)", "mcp.tools.enabled: \(mcp.toolGroups.joined(separator: ","))",
            "mcp.authorization_servers: \(mcp.authorizationServers.joined(separator: ","))",
        ]
        for (i, w) in webhooks.enumerated() {
            lines += [
                "webhooks[\(i)].name: \(w.name)", "webhooks[\(i)].url: \(Self.maskingPassword(w.url))",
                "webhooks[\(i)].secret: \(w.secrets.isEmpty ? "(unsigned)" : Array(repeating: "*****", count: w.secrets.count).joined(separator: " "))",
            ]
            for (key, value) in w.headers.sorted(by: { $0.key < $1.key }) {
                lines.append("webhooks[\(i)].headers.\(key): \(Self.isSecret(key) || key.lowercased() == "authorization" ? "*****" : value)")
            }
            lines += [
                "webhooks[\(i)].timeout_ms: \(w.timeoutMs)", "webhooks[\(i)].max_concurrency: \(w.maxConcurrency)",
                "webhooks[\(i)].max_age_ms: \(w.maxAgeMs)", "webhooks[\(i)].verify_tls: \(w.verifyTLS)",
            ]
        }
        return lines
    }
}
