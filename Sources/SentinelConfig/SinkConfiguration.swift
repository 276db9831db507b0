import Foundation
import SentinelYAML

/// The sink sections of the configuration: `influx`, `alerts`, `webhooks`.
extension SentinelConfiguration {
    static func loadSinks(_ root: YAMLValue, into config: inout SentinelConfiguration) throws(ValidationError) {
        let influx = root["influx"]
        if influx.exists {
            var i = Influx()
            try ConfigTable.checkKeys(influxKeys, in: influx)
            try ConfigTable.read(influxKeys, from: influx, into: &i)
            config.influx = i.url.isEmpty ? nil : i
        }
        let alerts = root["alerts"]
        if alerts.exists {
            var a = Alerts()
            try ConfigTable.checkKeys(alertsKeys, in: alerts)
            try ConfigTable.read(alertsKeys, from: alerts, into: &a)
            config.alerts = a.url.isEmpty ? nil : a
        }
        if root["webhooks"].exists {
            config.webhooks = try root["webhooks"].elements().map { node throws(ValidationError) in
                var w = Webhook()
                try ConfigTable.checkKeys(webhookKeys, in: node)
                try ConfigTable.read(webhookKeys, from: node, into: &w)
                return w
            }
        }
    }

    static func applySinkEnvironment(_ environment: [String: String], to config: inout SentinelConfiguration) throws(ValidationError) {
        // Any SENTINEL_INFLUX_* variable enables the sink with defaults for the rest.
        if environment.keys.contains(where: { $0.hasPrefix("SENTINEL_INFLUX_") }) {
            var i = config.influx ?? Influx()
            try ConfigTable.override(influxKeys, environment: environment, prefix: "SENTINEL_INFLUX_", into: &i)
            config.influx = i.url.isEmpty ? nil : i
        }
        // SENTINEL_ALERTS_URL empty disables the table; set, it enables it.
        if let url = environment["SENTINEL_ALERTS_URL"] { config.alerts = url.isEmpty ? nil : config.alerts ?? Alerts() }
        if var a = config.alerts {
            try ConfigTable.override(alertsKeys, environment: environment, prefix: "SENTINEL_ALERTS_", into: &a)
            config.alerts = a
        }
        // SENTINEL_WEBHOOKS_<i>_<KEY>: the i-th endpoint (added when i is the next index).
        for index in 0..<64 {
            let prefix = "SENTINEL_WEBHOOKS_\(index)_"
            guard environment.keys.contains(where: { $0.hasPrefix(prefix) }) else { continue }
            guard index <= config.webhooks.count else {
                throw YAMLValue.environment(prefix + "URL").error("webhook \(index) has no predecessor \(index - 1)")
            }
            if index == config.webhooks.count { config.webhooks.append(Webhook()) }
            try ConfigTable.override(webhookKeys, environment: environment, prefix: prefix, into: &config.webhooks[index])
        }
    }

    /// The `mcp` section's keys.
    static var mcpKeys: [ConfigKey<SentinelConfiguration>] {
        [
            .string(
                "mcp.http_listen", \.mcp.httpListen, "host:port for the MCP server's Streamable HTTP transport (cmcd-sentinel mcp --http overrides)",
                empty: "(stdio only)"),
            .string("mcp.token", \.mcp.token, "bearer token the MCP HTTP transport requires (secret)", secret: true),
            .integer(
                "mcp.max_sessions", \.mcp.maxSessions, 1...10_000, "most MCP clients (sessions) served at once over HTTP; more get 503 until one ends or expires"),
            .integer(
                "mcp.idle_timeout_ms", \.mcp.idleTimeoutMs, 1_000...86_400_000,
                "an MCP HTTP session unused this long is closed (the client gets 404 and initializes again)"),
            .list(
                "mcp.allowed_origins", \.mcp.allowedOrigins,
                "browser origins allowed over HTTP, e.g. https://assistant.example.com (a list; comma separated in the environment); others get 403"),
            .list("mcp.allowed_hosts", \.mcp.allowedHosts, "Host header values allowed over HTTP (name[:port] or name:*; a list); empty: any beyond loopback"),
            .mapping(
                "mcp.tokens", \.mcp.tokens,
                "more bearer tokens by name (a mapping name: token; NAME=TOKEN,... in the environment; secret); mcp.token is the one named default",
                secret: true),
            .integer(
                "mcp.rate_limit_per_minute", \.mcp.rateLimitPerMinute, 1...1_000_000,
                "requests one token may make in a minute over HTTP; more get 429 with Retry-After"),
            .list(
                "mcp.tools.enabled", \.mcp.toolGroups,
                "tool groups offered: history, anomalies, incidents, silences, charts (a list; comma separated in the environment)",
                check: { group in
                    MCP.allToolGroups.contains(group) ? nil : "unknown tool group '\(group.prefix(40))' (\(MCP.allToolGroups.joined(separator: ", ")))"
                }),
            .list(
                "mcp.authorization_servers", \.mcp.authorizationServers,
                "OAuth authorization servers named in /.well-known/oauth-protected-resource (a list)"),
        ]
    }

    /// The `influx` section's keys.
    static var influxKeys: [ConfigKey<Influx>] {
        [
            .string("url", \.url, "InfluxDB base URL, http:// or https://", display: maskingPassword),
            .custom(
                "api", "auto (ask /ping), v1 (/write) or v2 (/api/v2/write)",
                read: { node, i throws(ValidationError) in i.api = try api(node.string(), node) },
                parse: { text, node, i throws(ValidationError) in i.api = try api(text, node) }, show: { $0.api.rawValue }),
            .string("database", \.database, "v1 database or v2 bucket"),
            .string("retention_policy", \.retentionPolicy, "v1 retention policy; empty uses the default"),
            .string("org", \.org, "v2 organisation"),
            .string("token", \.token, "API token, sent as Authorization: Token (secret)", secret: true),
            .bool("write_raw", \.writeRaw, "write every request to cloudfront_logs, not only findings"),
            .bool("write_qoe", \.writeQoE, "write each cohort's closed window to cmcd_qoe (live QoE rollups)"),
            .integer("batch_size", \.batchSize, 1...100_000, "points per write"),
            .integer("flush_interval_ms", \.flushIntervalMs, 10...600_000, "a partly filled batch is written after this long"),
            .integer("max_buffered_points", \.maxBufferedPoints, 1...10_000_000, "points held before the daemon waits for InfluxDB"),
            .bool("gzip", \.gzip, "gzip request bodies"),
            .integer("timeout_ms", \.timeoutMs, 100...600_000, "timeout of one write"),
            .bool("verify_tls", \.verifyTLS, "verify the server certificate"),
            .integer("max_retry_ms", \.maxRetryMs, 0...86_400_000, "how long a failing write is retried before the daemon stops uncommitted"),
        ]
    }

    /// The `alerts` section's keys.
    static var alertsKeys: [ConfigKey<Alerts>] {
        [
            .string(
                "url", \.url, "sqlite:PATH or postgres://user:password@host:port/db; empty disables the alerts table and webhooks",
                display: maskingPassword),
            .integer("retention_days", \.retentionDays, 0...36_500, "resolved alerts older than this are deleted; 0 keeps them"),
            .bool("checkpoints", \.checkpoints, "checkpoint each partition's detection state here, so a restart resumes where it stopped"),
        ]
    }

    /// The keys of one `webhooks[]` endpoint.
    static var webhookKeys: [ConfigKey<Webhook>] {
        [
            .string("name", \.name, "endpoint name, referred to by routes in the rules"),
            .string("url", \.url, "endpoint URL", display: maskingPassword),
            .custom(
                "secret", "signing secret, or a list of them during a rotation (secret)",
                read: { node, w throws(ValidationError) in
                    w.secrets = node.isScalar ? [try node.string()] : try node.stringList()
                    w.secrets.removeAll { $0.isEmpty }
                },
                parse: { text, _, w in w.secrets = text.split(separator: " ").map(String.init) },
                show: { $0.secrets.isEmpty ? "(unsigned)" : Array(repeating: "*****", count: $0.secrets.count).joined(separator: " ") }),
            .mapping("headers", \.headers, "extra static headers (a mapping)", secret: false),
            .integer("timeout_ms", \.timeoutMs, 100...600_000, "timeout of one delivery attempt"),
            .integer("max_concurrency", \.maxConcurrency, 1...256, "deliveries in flight at once to this endpoint"),
            .integer("max_age_ms", \.maxAgeMs, 1_000...(30 * 86_400_000), "an undelivered notification is dead after this long"),
            .bool("verify_tls", \.verifyTLS, "verify the server certificate"),
        ]
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
        var lines = influx.map { ConfigTable.describe(Self.influxKeys, $0, prefix: "influx.") } ?? ["influx: (disabled)"]
        lines += alerts.map { ConfigTable.describe(Self.alertsKeys, $0, prefix: "alerts.") } ?? ["alerts: (disabled)"]
        for (i, webhook) in webhooks.enumerated() { lines += ConfigTable.describe(Self.webhookKeys, webhook, prefix: "webhooks[\(i)].") }
        return lines
    }
}
