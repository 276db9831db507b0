import SentinelYAML

/// A record's attribute that cohorts are grouped by.
public enum CohortDimension: String, Sendable, Hashable, CaseIterable, Comparable {
    /// CloudFront's `x-edge-location` (the PoP).
    case edgeLocation = "edge_location"
    /// CMCD `cid`.
    case contentID = "content_id"
    /// CMCD `st` (`v` VOD, `l` live, `ll` low-latency live).
    case streamType = "stream_type"
    /// CMCD `ot` (`v`, `a`, `av`, `m`, `i`, ...).
    case objectType = "object_type"
    /// The HTTP status's class (`2xx`, `4xx`, `5xx`, ...).
    case statusClass = "status_class"

    public static func < (a: CohortDimension, b: CohortDimension) -> Bool { a.ordinal < b.ordinal }

    /// Its place in `allCases`.
    var ordinal: Int {
        switch self {
        case .edgeLocation: 0
        case .contentID: 1
        case .streamType: 2
        case .objectType: 3
        case .statusClass: 4
        }
    }
}

/// A series computed per cohort and window, that incident rules judge.
public enum CohortMetric: String, Sendable, Hashable, CaseIterable {
    /// Stall time over watch time of the window's sessions (CTA-2066 rebuffering ratio).
    case rebufferRatio = "rebuffer_ratio"
    /// Share of the window's sessions that were stalled in it.
    case starvingShare = "starving_share"
    /// Share of the window's sessions with a critical buffer drop open.
    case criticalDropShare = "critical_drop_share"
    /// Share of the window's sessions still starting after `startup_delay.critical_ms`.
    case stuckStartupShare = "stuck_startup_share"
    /// Share of the window's requests answered 4xx or 5xx.
    case errorShare = "error_share"
    /// Median and 95th percentile of the startup times measured in the window (ms).
    case startupP50 = "startup_p50_ms"
    case startupP95 = "startup_p95_ms"

    /// Whether the series needs sessions that started in the window (not only active ones).
    var countsStartups: Bool { self == .startupP50 || self == .startupP95 }
}

/// Cohort windows and the incident rules judged on them (`cohorts:` in the rules).
public struct CohortRules: Sendable, Equatable {
    /// An incident rule: a series of every cohort against a fixed threshold, its own
    /// baseline, or both.
    public struct Incident: Sendable, Equatable {
        public var name: String
        public var metric: CohortMetric
        public var severity: Severity = .critical
        /// Breached when the value is above this (nil: no fixed threshold).
        public var above: Double?
        /// Breached when the value is this many standard deviations above the cohort's
        /// baseline (nil: no baseline test). With `above` too, both must hold.
        public var deviationSigmas: Double?
        /// The breach must last this long (event time) before the incident fires.
        public var forMs: Int64 = 20_000
        /// A firing incident resolves after this long without a breach (hysteresis).
        public var resolveAfterMs: Int64 = 60_000

        public init(name: String, metric: CohortMetric) {
            self.name = name
            self.metric = metric
        }
    }

    /// Which dimension combinations form cohorts; empty turns cohorts off.
    public var groups: [[CohortDimension]] = [[.edgeLocation], [.contentID], [.edgeLocation, .contentID]]
    /// Tumbling window length (event time).
    public var windowMs: Int64 = 10_000
    /// A window with fewer sessions than this is not judged (too few to mean anything).
    public var minSessions = 25
    /// Most cohorts tracked at once; new ones beyond it are counted and not tracked.
    public var maxCohorts = 20_000
    /// The baseline is an exponentially weighted mean and deviation over about this many
    /// windows (an hour of 10 s windows).
    public var baselineWindows = 360
    /// The baseline is used only after this many judged windows.
    public var baselineWarmupWindows = 30
    /// The rules; empty: windows are kept (for rollups) and nothing fires.
    public var incidents: [Incident] = CohortRules.defaultIncidents
    /// A cohort with no request for this many windows is forgotten (its baseline with it).
    public var idleWindows = 360
    /// Windows held open at once while the slowest input catches up (partitions read unevenly
    /// from a backlog); beyond it the oldest closes with what it has.
    public var maxOpenWindows = 60

    public var enabled: Bool { !groups.isEmpty }

    public static var defaultIncidents: [Incident] {
        var rebuffering = Incident(name: "rebuffering", metric: .rebufferRatio)
        rebuffering.above = 0.02
        var errors = Incident(name: "request-errors", metric: .errorShare)
        errors.above = 0.05
        var startups = Incident(name: "slow-startups", metric: .startupP95)
        startups.severity = .warning
        startups.above = 5_000
        return [rebuffering, errors, startups]
    }

    public init() {}

    static func parse(_ node: YAMLValue) throws(ValidationError) -> CohortRules {
        var rules = CohortRules()
        guard node.exists else { return rules }
        try node.keys(allowed: [
            "groups", "window_ms", "min_sessions", "max_cohorts", "baseline_windows", "baseline_warmup_windows", "idle_windows", "max_open_windows",
            "incidents",
        ])
        if node["groups"].exists {
            rules.groups = []
            for group in try node["groups"].elements() {
                var dimensions: [CohortDimension] = []
                for element in try group.elements() {
                    let text = try element.string()
                    guard let dimension = CohortDimension(rawValue: text) else {
                        throw element.error(
                            "unknown cohort dimension '\(text.prefix(30))' (expected \(CohortDimension.allCases.map(\.rawValue).joined(separator: ", ")))")
                    }
                    guard !dimensions.contains(dimension) else { throw element.error("'\(text)' is listed twice in one group") }
                    dimensions.append(dimension)
                }
                guard !dimensions.isEmpty else { throw group.error("a cohort group needs at least one dimension") }
                dimensions.sort()
                guard !rules.groups.contains(dimensions) else { throw group.error("this group is listed twice") }
                rules.groups.append(dimensions)
            }
        }
        rules.windowMs = try node["window_ms"].integer(in: 1_000...3_600_000, default: rules.windowMs)
        rules.minSessions = Int(try node["min_sessions"].integer(in: 1...1_000_000, default: Int64(rules.minSessions)))
        rules.maxCohorts = Int(try node["max_cohorts"].integer(in: 1...10_000_000, default: Int64(rules.maxCohorts)))
        rules.baselineWindows = Int(try node["baseline_windows"].integer(in: 2...1_000_000, default: Int64(rules.baselineWindows)))
        rules.baselineWarmupWindows = Int(try node["baseline_warmup_windows"].integer(in: 1...1_000_000, default: Int64(rules.baselineWarmupWindows)))
        rules.idleWindows = Int(try node["idle_windows"].integer(in: 1...1_000_000, default: Int64(rules.idleWindows)))
        rules.maxOpenWindows = Int(try node["max_open_windows"].integer(in: 1...10_000, default: Int64(rules.maxOpenWindows)))
        if node["incidents"].exists {
            rules.incidents = []
            for element in try node["incidents"].elements() {
                let incident = try parseIncident(element, windowMs: rules.windowMs)
                guard !rules.incidents.contains(where: { $0.name == incident.name }) else {
                    throw element["name"].error("incident rule name '\(incident.name)' is used twice")
                }
                rules.incidents.append(incident)
            }
        }
        return rules
    }

    static func parseIncident(_ node: YAMLValue, windowMs: Int64) throws(ValidationError) -> Incident {
        try node.keys(allowed: ["name", "metric", "severity", "above", "deviation_sigmas", "for_ms", "resolve_after_ms"])
        guard node["name"].exists else { throw node.error("an incident rule needs a name") }
        let name = try node["name"].string()
        guard !name.isEmpty, name.count <= 64 else { throw node["name"].error("must be 1 to 64 characters") }
        guard node["metric"].exists else { throw node.error("an incident rule needs a metric") }
        let text = try node["metric"].string()
        guard let metric = CohortMetric(rawValue: text) else {
            throw node["metric"].error("unknown cohort metric '\(text.prefix(30))' (expected \(CohortMetric.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        var incident = Incident(name: name, metric: metric)
        if node["severity"].exists {
            guard let severity = Severity(rawValue: try node["severity"].string()) else { throw node["severity"].error("must be warning or critical") }
            incident.severity = severity
        }
        if node["above"].exists { incident.above = try node["above"].number(in: 0...86_400_000) }
        if node["deviation_sigmas"].exists { incident.deviationSigmas = try node["deviation_sigmas"].number(in: 0.5...100) }
        guard incident.above != nil || incident.deviationSigmas != nil else {
            throw node.error("an incident rule needs 'above', 'deviation_sigmas' or both")
        }
        incident.forMs = try node["for_ms"].integer(in: 0...86_400_000, default: incident.forMs)
        incident.resolveAfterMs = try node["resolve_after_ms"].integer(in: windowMs...86_400_000, default: max(incident.resolveAfterMs, windowMs))
        return incident
    }
}
