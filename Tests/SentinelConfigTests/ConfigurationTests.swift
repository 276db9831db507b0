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
        ("influx: {url: http://x}", "influx", "not available"),
        ("http: {listen: everywhere}", "http.listen", "host:port"),
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
            let expected = "SENTINEL_" + key.key.uppercased().replacingDots
            #expect(key.environment == expected || key.environment == "-")
        }
    }
}

extension String {
    var replacingDots: String { String(map { $0 == "." ? "_" : $0 }) }
}
