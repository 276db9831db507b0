import Foundation
import SentinelYAML
import Testing

@testable import SentinelConfig

struct ConfigurationTests {
    @Test func defaultsWithoutAFile() throws {
        let c = try SentinelConfiguration.load(yaml: nil, file: "-", environment: [:])
        #expect(c == SentinelConfiguration())
        #expect(c.kafka.topic == "cmcd-logs" && c.kafka.groupID == "cmcd-sentinel" && c.httpListen == "127.0.0.1:9464")
    }

    @Test func fileThenEnvironment() throws {
        let yaml = """
            kafka:
              brokers: k1:9092,k2:9092
              topic: logs
              properties: {security.protocol: SASL_SSL, sasl.password: hunter2}
            input: {format: json}
            rules: my-rules.yaml
            output: {stdout: false}
            http: {listen: ""}
            """
        let c = try SentinelConfiguration.load(
            yaml: yaml, file: "c.yaml", environment: ["SENTINEL_KAFKA_TOPIC": "other", "SENTINEL_KAFKA_PARTITIONS": "0, 2", "UNRELATED": "x"])
        #expect(c.kafka.brokers == "k1:9092,k2:9092")
        #expect(c.kafka.topic == "other")
        #expect(c.kafka.partitions == [0, 2])
        #expect(c.kafka.properties["security.protocol"] == "SASL_SSL")
        #expect(c.input.format == .json && c.rules == "my-rules.yaml" && !c.stdout && c.httpListen.isEmpty)
        let described = c.effectiveDescription.joined(separator: "\n")
        #expect(described.contains("kafka.properties.sasl.password: *****"))
        #expect(!described.contains("hunter2"))
    }

    @Test(arguments: [
        ("kafka: {brokers: nohost}", "kafka.brokers", "host:port"),
        ("kafka: {topic: \"\"}", "kafka.topic", "empty"),
        ("kafka: {brokres: a:1}", "kafka.brokres", "unknown key"),
        ("input: {format: xml}", "input.format", "cloudfront, json or cmcd"),
        ("input: {fields: [c-ip]}", "input.fields", "timestamp"),
        ("mcp: {http_listen: everywhere}", "mcp.http_listen", "host:port"),
        ("influx: {url: ftp://x}", "influx.url", "http://"),
        ("influx: {api: v3}", "influx.api", "auto, v1 or v2"),
        ("influx: {api: v2}", "influx.org", "v2 API"),
        ("influx: {batch_size: 0}", "influx.batch_size", "1"),
        ("influx: {tokn: x}", "influx.tokn", "unknown key"),
        ("alerts: {url: mysql://x}", "alerts.url", "sqlite:PATH"),
        ("webhooks: [{name: a, url: nowhere}]", "webhooks", "not an http"),
        ("webhooks: [{name: a, url: \"http://h\"}, {name: a, url: \"http://h\"}]", "webhooks", "used twice"),
        ("{alerts: {url: \"\"}, webhooks: [{name: a, url: \"http://h\"}]}", "webhooks", "alerts table"),
        ("http: {listen: everywhere}", "http.listen", "host:port"),
        ("http: {tokens: {ops: short}}", "http.tokens", "shorter than 16"),
        ("http: {tokens: {\"o p\": 0123456789abcdefgh}}", "http.tokens", "not a token name"),
        ("http: {tokens: [a]}", "http.tokens", "mapping"),
        ("mcp: {tools: {enabled: [graphs]}}", "mcp.tools.enabled", "unknown tool group"),
        ("mcp: {tools: {disabled: [history]}}", "mcp.tools.disabled", "unknown key"),
        ("mcp: {tokens: {bot: short}}", "mcp.tokens", "shorter than 16"),
        ("mcp: {rate_limit_per_minute: 0}", "mcp.rate_limit_per_minute", "1"),
    ])
    func invalidConfigurationNamesTheKey(yaml: String, key: String, reason: String) {
        do {
            _ = try SentinelConfiguration.load(yaml: yaml, file: "bad.yaml", environment: [:])
            Issue.record("accepted")
        } catch {
            #expect(error.key == key, "\(error)")
            #expect(error.reason.contains(reason), "\(error)")
            #expect(error.description.hasPrefix("bad.yaml"))
        }
    }

    @Test func invalidEnvironmentNamesTheVariable() {
        #expect {
            _ = try SentinelConfiguration.load(yaml: nil, file: "-", environment: ["SENTINEL_INPUT_FORMAT": "xml"])
        } throws: { error in
            "\(error)".contains("SENTINEL_INPUT_FORMAT")
        }
    }

    @Test func everyKeyHasAnEnvironmentVariableOrIsAMapping() {
        for key in SentinelConfiguration.keys {
            let expected = "SENTINEL_" + key.key.uppercased().replacingOccurrences(of: "[].", with: "_<i>_").replacingDots
            #expect(key.environment == expected || key.environment == "-", "\(key.key)")
        }
    }

    /// The reference is the table the loader reads: the file accepts every key it lists (and
    /// no other), and each listed variable is read (it changes the configuration or is refused).
    @Test func everyReferencedKeyIsReadFromTheFileAndItsVariable() throws {
        for key in SentinelConfiguration.keys where key.key != "influx" {
            // kafka.brokers -> kafka: {brokers: ~}; webhooks[].url -> webhooks: [{url: ~}]
            let parts = key.key.split(separator: ".").map(String.init)
            let yaml = parts.reversed().reduce("~") { inner, part in
                part.hasSuffix("[]") ? "{\(part.dropLast(2)): [\(inner)]}" : "{\(part): \(inner)}"
            }
            do { _ = try SentinelConfiguration.load(yaml: yaml, file: "k.yaml", environment: [:]) } catch {
                #expect(!error.reason.contains("unknown key"), "\(key.key): \(error)")  // a webhook without a name is refused later
            }
        }
        #expect { _ = try SentinelConfiguration.load(yaml: "{mcp: {tools: {enabled: ~, other: ~}}}", file: "k.yaml", environment: [:]) } throws: {
            ($0 as? ValidationError)?.key == "mcp.tools.other"
        }
        let base = [
            "SENTINEL_INFLUX_URL": "http://i:8086", "SENTINEL_WEBHOOKS_0_NAME": "hook", "SENTINEL_WEBHOOKS_0_URL": "http://h:9000",
        ]
        let described = try SentinelConfiguration.load(yaml: nil, file: "-", environment: base).effectiveDescription
        for key in SentinelConfiguration.keys where key.environment != "-" {
            let variable = key.environment.replacingOccurrences(of: "<i>", with: "0")
            var environment = base
            environment[variable] = "zzz-value"
            do {
                let changed = try SentinelConfiguration.load(yaml: nil, file: "-", environment: environment).effectiveDescription
                let unchanged = changed == described
                #expect(!unchanged, "\(variable) is not read")
            } catch {
                // Refused: read, and found wrong for its kind.
            }
        }
    }

    @Test func theConfigurationReferenceListsEveryKeyWithItsVariable() throws {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/configuration.md")
        let text = try String(contentsOf: readme, encoding: .utf8)
        for key in SentinelConfiguration.keys {
            let variable = key.environment == "-" ? "–" : "`\(key.environment)`"
            #expect(text.contains("| `\(key.key)` | \(variable) |"), "docs/configuration.md's table lacks \(key.key)")
        }
    }

    /// The reference's annotated configuration states every default: loading it gives the
    /// code's defaults (the example webhook aside), so the two cannot drift apart.
    @Test func theConfigurationReferenceShowsTheCodesDefaults() throws {
        let readme = try String(
            contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("docs/configuration.md"), encoding: .utf8)
        let section = try #require(readme.range(of: "# Configuration"))
        let start = try #require(readme.range(of: "```yaml\n", range: section.upperBound..<readme.endIndex))
        let end = try #require(readme.range(of: "\n```", range: start.upperBound..<readme.endIndex))
        let c = try SentinelConfiguration.load(yaml: String(readme[start.upperBound..<end.lowerBound]), file: "docs/configuration.md", environment: [:])
        let defaults = SentinelConfiguration()
        #expect(c.kafka == defaults.kafka)
        #expect(c.input == defaults.input)
        #expect(c.kinesis == defaults.kinesis)
        #expect(c.rules == defaults.rules && c.stdout == defaults.stdout && c.httpListen == defaults.httpListen)
        #expect(c.influx == SentinelConfiguration.Influx(), "the influx section shows the defaults")
        #expect(c.alerts == defaults.alerts)
        #expect(c.mcp == defaults.mcp)
        var example = SentinelConfiguration.Webhook()
        example.name = "default"
        example.url = "http://127.0.0.1:9000/hook"
        example.secrets = ["whsec_..."]
        #expect(c.webhooks == [example], "the webhook example shows the defaults of the other keys")
    }

    @Test func sinksAreConfiguredByFileAndEnvironmentWithSecretsMasked() throws {
        let yaml = """
            influx: {url: "https://influx.example:8086", database: cmcd, token: tok-123, gzip: true}
            alerts: {url: "postgres://sentinel:pw-456@db:5432/alerts"}
            webhooks:
              - {name: default, url: "https://hooks.example/x", secret: whsec_abc, headers: {Authorization: Bearer zzz}}
            """
        let c = try SentinelConfiguration.load(
            yaml: yaml, file: "c.yaml",
            environment: ["SENTINEL_INFLUX_BATCH_SIZE": "100", "SENTINEL_WEBHOOKS_0_SECRET": "whsec_new whsec_old", "SENTINEL_WEBHOOKS_1_NAME": "pager",
                          "SENTINEL_WEBHOOKS_1_URL": "http://pager:9000"])
        #expect(c.influx?.url == "https://influx.example:8086" && c.influx?.batchSize == 100 && c.influx?.gzip == true)
        #expect(c.alerts?.url == "postgres://sentinel:pw-456@db:5432/alerts")
        #expect(c.webhooks.map(\.name) == ["default", "pager"])
        #expect(c.webhooks[0].secrets == ["whsec_new", "whsec_old"])
        let described = c.effectiveDescription.joined(separator: "\n")
        for secret in ["tok-123", "pw-456", "whsec_", "Bearer zzz"] { #expect(!described.contains(secret), "\(secret) shown") }
        #expect(described.contains("alerts.url: postgres://sentinel:*****@db:5432/alerts"))
    }

    @Test func httpTokensAreNamedFromFileOrEnvironmentAndNeverShown() throws {
        let c = try SentinelConfiguration.load(yaml: "http: {tokens: {ops: ops-secret-0123456789}}", file: "c.yaml", environment: [:])
        #expect(c.httpTokens == ["ops": "ops-secret-0123456789"])
        let e = try SentinelConfiguration.load(
            yaml: "http: {tokens: {ops: ops-secret-0123456789}}", file: "c.yaml",
            environment: ["SENTINEL_HTTP_TOKENS": "bot=bot-secret-0123456789,pager=pager-secret-012345"])
        #expect(e.httpTokens == ["bot": "bot-secret-0123456789", "pager": "pager-secret-012345"])
        let described = e.effectiveDescription.joined(separator: "\n")
        #expect(described.contains("http.tokens: bot=*****,pager=*****"))
        #expect(!described.contains("secret-0123"))
        #expect(throws: ValidationError.self) {
            _ = try SentinelConfiguration.load(yaml: nil, file: "-", environment: ["SENTINEL_HTTP_TOKENS": "no-equals-sign"])
        }
    }

    @Test func mcpTokensGroupsAndLimitsFromFileAndEnvironment() throws {
        let c = try SentinelConfiguration.load(
            yaml: "mcp: {token: first-token-0123456789, tokens: {bot: bot-token-0123456789ab}, tools: {enabled: [incidents, charts]}}", file: "c.yaml",
            environment: ["SENTINEL_MCP_RATE_LIMIT_PER_MINUTE": "30", "SENTINEL_MCP_AUTHORIZATION_SERVERS": "https://auth.example.com"])
        #expect(c.mcp.namedTokens == ["default": "first-token-0123456789", "bot": "bot-token-0123456789ab"])
        #expect(c.mcp.toolGroups == ["incidents", "charts"] && c.mcp.rateLimitPerMinute == 30)
        #expect(c.mcp.authorizationServers == ["https://auth.example.com"])
        let described = c.effectiveDescription.joined(separator: "\n")
        #expect(described.contains("mcp.tokens: bot=*****") && !described.contains("bot-token"))
        #expect(throws: ValidationError.self) {
            _ = try SentinelConfiguration.load(yaml: nil, file: "-", environment: ["SENTINEL_MCP_TOOLS_ENABLED": "history,graphs"])
        }
    }

    @Test func withoutASectionInfluxIsOffAndTheAlertsTableIsTheSQLiteDefault() throws {
        let c = try SentinelConfiguration.load(yaml: nil, file: "-", environment: [:])
        #expect(c.influx == nil)
        #expect(c.alerts?.url == "sqlite:cmcd-sentinel.db")
        let off = try SentinelConfiguration.load(yaml: nil, file: "-", environment: ["SENTINEL_ALERTS_URL": "", "SENTINEL_INFLUX_URL": "http://i:8086"])
        #expect(off.alerts == nil && off.influx?.url == "http://i:8086")
    }
}

extension String {
    var replacingDots: String { String(map { $0 == "." ? "_" : $0 }) }
}
