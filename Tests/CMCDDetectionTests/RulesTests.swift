import Foundation
import SentinelYAML
import Testing

@testable import CMCDDetection

struct RulesTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func defaultFileEqualsTheBuiltInDefaults() throws {
        let text = try String(contentsOf: Self.root.appendingPathComponent("rules/default.yaml"), encoding: .utf8)
        #expect(try DetectionRules.parse(yaml: text, file: "rules/default.yaml") == DetectionRules())
    }

    @Test func emptyDocumentMeansDefaults() throws {
        #expect(try DetectionRules.parse(yaml: "", file: "x.yaml") == DetectionRules())
    }

    @Test func valuesAreRead() throws {
        let rules = try DetectionRules.parse(yaml: """
            detectors:
              buffer_drop: {lookback_ms: 20000, critical_drop_ratio: 0.9, object_types: [v]}
              startup_delay: {enabled: false}
            sessions: {max_live_sessions: 5000}
            routes:
              - {name: all-critical, webhook: pager, min_severity: critical, send_resolved: false, repeat_interval_ms: 600000}
              - {name: per-edge, webhook: chat, group_by: [edge_location, type], group_interval_ms: 60000, max_per_hour: 30}
            """, file: "r.yaml")
        #expect(rules.bufferDrop.lookbackMs == 20000 && rules.bufferDrop.criticalDropRatio == 0.9)
        #expect(rules.bufferDrop.objectTypes == [.video])
        #expect(!rules.startupDelay.enabled)
        #expect(rules.sessions.maxLiveSessions == 5000)
        #expect(rules.routes.count == 2 && rules.routes[0].minSeverity == .critical && !rules.routes[0].sendResolved)
        #expect(rules.routes[0].repeatIntervalMs == 600_000 && rules.routes[0].types.isEmpty)
        #expect(rules.routes[0].groupBy.isEmpty && rules.routes[0].groupIntervalMs == nil && rules.routes[0].maxPerHour == nil)
        #expect(rules.routes[1].groupBy == [.edgeLocation, .type] && rules.routes[1].groupIntervalMs == 60_000 && rules.routes[1].maxPerHour == 30)
    }

    @Test(arguments: [
        ("detectors:\n  buffer_drop:\n    lookbak_ms: 1", "detectors.buffer_drop.lookbak_ms", "unknown key"),
        ("detectors:\n  buffer_drop:\n    critical_drop_ratio: 1.5", "detectors.buffer_drop.critical_drop_ratio", "between"),
        ("detectors:\n  buffer_drop:\n    warning_drop_ratio: 0.8\n    critical_drop_ratio: 0.6", "detectors.buffer_drop.critical_drop_ratio", "at least"),
        ("detectors:\n  startup_delay:\n    warning_ms: ten", "detectors.startup_delay.warning_ms", "whole number"),
        ("detectors:\n  buffer_drop:\n    object_types: [video]", "detectors.buffer_drop.object_types[0]", "object type"),
        ("detectors:\n  buffer_starvation:\n    enabled: maybe", "detectors.buffer_starvation.enabled", "true or false"),
        ("routes:\n  - name: a\n    webhook: w\n    types: [buffer_dip]", "routes[0].types[0]", "unknown finding type"),
        ("routes:\n  - webhook: w", "routes[0]", "needs a name"),
        ("routes:\n  - {name: a, webhook: w}\n  - {name: a, webhook: w}", "routes[1].name", "used twice"),
        ("routes:\n  - {name: a, webhook: w, group_by: [cdn]}", "routes[0].group_by[0]", "cannot group by"),
        ("routes:\n  - {name: a, webhook: w, group_by: [type, type]}", "routes[0].group_by[1]", "named twice"),
        ("routes:\n  - {name: a, webhook: w, group_interval_ms: 5}", "routes[0].group_interval_ms", "between"),
        ("routes:\n  - {name: a, webhook: w, max_per_hour: 0}", "routes[0].max_per_hour", "between"),
        ("sessions: [1, 2]", "sessions", "mapping"),
        ("detectors: {buffer_drop: {lookback_ms: 1: 2}}", "", "not valid YAML"),
    ])
    func invalidRulesNameFileKeyAndReason(yaml: String, key: String, reason: String) {
        do {
            _ = try DetectionRules.parse(yaml: yaml, file: "bad.yaml")
            Issue.record("accepted invalid rules")
        } catch {
            #expect(error.file == "bad.yaml")
            #expect(error.key == key)
            #expect(error.reason.contains(reason), "\(error)")
            #expect(error.description.hasPrefix("bad.yaml"))
        }
    }

    @Test func errorsCarryTheLine() {
        do {
            _ = try DetectionRules.parse(yaml: "version: 1\n\ndetectors:\n  startup_delay:\n    critical_ms: -1\n", file: "f.yaml")
            Issue.record("accepted invalid rules")
        } catch {
            #expect(error.line == 5)
            #expect(error.description == "f.yaml:5: detectors.startup_delay.critical_ms: must be between 1 and 3600000 (got -1)")
        }
    }
}
