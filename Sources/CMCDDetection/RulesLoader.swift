import CMCD
import SentinelYAML

extension DetectionRules {
    /// Parses and validates a rules document. Every field is checked; unknown keys are
    /// errors, so a typo never silently falls back to a default.
    public static func parse(yaml text: String, file: String) throws(ValidationError) -> DetectionRules {
        let root = try YAMLValue.parse(text, file: file)
        try root.keys(allowed: ["version", "detectors", "sessions", "cohorts", "routes"])
        let version = try root["version"].integer(in: 1...1, default: 1)
        _ = version
        var rules = DetectionRules()

        let detectors = root["detectors"]
        try detectors.keys(allowed: ["buffer_drop", "buffer_starvation", "startup_delay", "slow_seek"])

        let drop = detectors["buffer_drop"]
        try drop.keys(allowed: [
            "enabled", "lookback_ms", "min_reference_ms", "warning_drop_ratio", "critical_drop_ratio",
            "recovery_ratio", "object_types", "live_min_reference_ms",
        ])
        rules.bufferDrop.enabled = try drop["enabled"].bool(default: true)
        rules.bufferDrop.lookbackMs = try drop["lookback_ms"].integer(in: 100...3_600_000, default: 10_000)
        rules.bufferDrop.minReferenceMs = try drop["min_reference_ms"].integer(in: 0...3_600_000, default: 1_000)
        rules.bufferDrop.warningDropRatio = try drop["warning_drop_ratio"].number(in: 0.01...1, default: 0.5)
        rules.bufferDrop.criticalDropRatio = try drop["critical_drop_ratio"].number(in: 0.01...1, default: 0.7)
        guard rules.bufferDrop.criticalDropRatio >= rules.bufferDrop.warningDropRatio else {
            throw drop["critical_drop_ratio"].error("must be at least warning_drop_ratio (\(rules.bufferDrop.warningDropRatio))")
        }
        rules.bufferDrop.recoveryRatio = try drop["recovery_ratio"].number(in: 0.01...1, default: 0.5)
        rules.bufferDrop.liveMinReferenceMs = try drop["live_min_reference_ms"].integer(in: 0...3_600_000, default: 4_000)
        if drop["object_types"].exists {
            var types = Set<CMCDObjectType>()
            for element in try drop["object_types"].elements() {
                let text = try element.string()
                guard let ot = CMCDObjectType(rawValue: text) else {
                    throw element.error("'\(text.prefix(20))' is not a CMCD object type (m, a, v, av, i, c, tt, k, o)")
                }
                types.insert(ot)
            }
            guard !types.isEmpty else { throw drop["object_types"].error("must list at least one object type") }
            rules.bufferDrop.objectTypes = types
        }

        let starvation = detectors["buffer_starvation"]
        try starvation.keys(allowed: ["enabled", "low_buffer_ms", "recovered_buffer_ms", "live_low_buffer_ratio"])
        rules.bufferStarvation.enabled = try starvation["enabled"].bool(default: true)
        rules.bufferStarvation.lowBufferMs = try starvation["low_buffer_ms"].integer(in: 0...600_000, default: 500)
        rules.bufferStarvation.recoveredBufferMs = try starvation["recovered_buffer_ms"].integer(in: 0...600_000, default: 2_000)
        rules.bufferStarvation.liveLowBufferRatio = try starvation["live_low_buffer_ratio"].number(in: 0...1, default: 0.25)
        guard rules.bufferStarvation.recoveredBufferMs >= rules.bufferStarvation.lowBufferMs else {
            throw starvation["recovered_buffer_ms"].error("must be at least low_buffer_ms (\(rules.bufferStarvation.lowBufferMs))")
        }

        let startup = detectors["startup_delay"]
        try startup.keys(allowed: ["enabled", "warning_ms", "critical_ms"])
        rules.startupDelay.enabled = try startup["enabled"].bool(default: true)
        rules.startupDelay.warningMs = try startup["warning_ms"].integer(in: 1...3_600_000, default: 2_000)
        rules.startupDelay.criticalMs = try startup["critical_ms"].integer(in: 1...3_600_000, default: 5_000)
        guard rules.startupDelay.criticalMs >= rules.startupDelay.warningMs else {
            throw startup["critical_ms"].error("must be at least warning_ms (\(rules.startupDelay.warningMs))")
        }

        let seek = detectors["slow_seek"]
        try seek.keys(allowed: ["enabled", "warning_ms", "critical_ms"])
        rules.slowSeek.enabled = try seek["enabled"].bool(default: true)
        rules.slowSeek.warningMs = try seek["warning_ms"].integer(in: 1...3_600_000, default: 2_000)
        rules.slowSeek.criticalMs = try seek["critical_ms"].integer(in: 1...3_600_000, default: 5_000)
        guard rules.slowSeek.criticalMs >= rules.slowSeek.warningMs else {
            throw seek["critical_ms"].error("must be at least warning_ms (\(rules.slowSeek.warningMs))")
        }

        let sessions = root["sessions"]
        try sessions.keys(allowed: ["reorder_tolerance_ms", "idle_timeout_ms", "max_live_sessions", "pause_gap_ms", "max_future_ms"])
        rules.sessions.reorderToleranceMs = try sessions["reorder_tolerance_ms"].integer(in: 0...600_000, default: 2_000)
        rules.sessions.idleTimeoutMs = try sessions["idle_timeout_ms"].integer(in: 1_000...86_400_000, default: 300_000)
        rules.sessions.maxLiveSessions = Int(try sessions["max_live_sessions"].integer(in: 1...100_000_000, default: 1_000_000))
        rules.sessions.pauseGapMs = try sessions["pause_gap_ms"].integer(in: 1_000...86_400_000, default: 15_000)
        rules.sessions.maxFutureMs = try sessions["max_future_ms"].integer(in: 1_000...86_400_000, default: 120_000)

        rules.cohorts = try CohortRules.parse(root["cohorts"])

        if root["routes"].exists {
            rules.routes = []
            var names = Set<String>()
            for element in try root["routes"].elements() {
                let route = try parseRoute(element)
                guard names.insert(route.name).inserted else { throw element["name"].error("route name '\(route.name)' is used twice") }
                rules.routes.append(route)
            }
        }
        return rules
    }

    static func parseRoute(_ node: YAMLValue) throws(ValidationError) -> Route {
        try node.keys(allowed: ["name", "webhook", "types", "min_severity", "min_drop_percent", "send_resolved", "repeat_interval_ms", "group_wait_ms", "group_by", "group_interval_ms", "max_per_hour",
        ])
        guard node["name"].exists else { throw node.error("a route needs a name") }
        guard node["webhook"].exists else { throw node.error("a route needs a webhook (an endpoint name from the configuration)") }
        let name = try node["name"].string()
        guard !name.isEmpty, name.count <= 64 else { throw node["name"].error("must be 1 to 64 characters") }
        var route = Route(name: name, webhook: try node["webhook"].string())
        if node["types"].exists {
            for element in try node["types"].elements() {
                let text = try element.string()
                guard let type = FindingType(rawValue: text) else {
                    throw element.error("unknown finding type '\(text.prefix(30))' (expected \(FindingType.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                route.types.insert(type)
            }
        }
        if node["min_severity"].exists {
            let text = try node["min_severity"].string()
            guard let severity = Severity(rawValue: text) else { throw node["min_severity"].error("must be warning or critical") }
            route.minSeverity = severity
        }
        if node["min_drop_percent"].exists {
            route.minDropPercent = try node["min_drop_percent"].number(in: 0...100)
        }
        route.sendResolved = try node["send_resolved"].bool(default: true)
        if node["repeat_interval_ms"].exists {
            route.repeatIntervalMs = try node["repeat_interval_ms"].integer(in: 60_000...604_800_000)
        }
        route.groupWaitMs = try node["group_wait_ms"].integer(in: 0...3_600_000, default: 0)
        if node["group_by"].exists {
            for element in try node["group_by"].elements() {
                let text = try element.string()
                guard let field = Route.GroupField(rawValue: text) else {
                    throw element.error("cannot group by '\(text.prefix(30))' (expected \(Route.GroupField.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                guard !route.groupBy.contains(field) else { throw element.error("'\(text)' is named twice") }
                route.groupBy.append(field)
            }
        }
        if node["group_interval_ms"].exists {
            route.groupIntervalMs = try node["group_interval_ms"].integer(in: 10_000...86_400_000)
        }
        if node["max_per_hour"].exists {
            route.maxPerHour = Int(try node["max_per_hour"].integer(in: 1...100_000))
        }
        return route
    }
}
