import CMCD

/// Detector thresholds, session limits and notification routes, as loaded from `rules/`.
/// The defaults here equal `rules/default.yaml`.
public struct DetectionRules: Sendable, Equatable {
    /// Sudden drops of the buffer against the recent maximum.
    public struct BufferDrop: Sendable, Equatable {
        public var enabled = true
        /// Event time before the current sample in which the reference (highest `bl`) is sought.
        public var lookbackMs: Int64 = 10_000
        /// No drop is judged against a reference below this.
        public var minReferenceMs: Int64 = 1_000
        /// Drop ratio (1 - current/reference) at or above which a warning fires.
        public var warningDropRatio = 0.5
        /// Drop ratio at or above which the finding is critical.
        public var criticalDropRatio = 0.7
        /// The episode resolves once `bl` is back to this fraction of the reference.
        public var recoveryRatio = 0.5
        /// Object types whose requests report the buffer; requests without `ot` count too.
        public var objectTypes: Set<CMCDObjectType> = [.audio, .video, .muxed]
        /// For live streams (`st=l`, `ll`), whose players keep a few seconds at most and steer
        /// latency with it, no drop is judged against a reference below this.
        public var liveMinReferenceMs: Int64 = 4_000
        public init() {}
    }

    /// The player ran out of buffer, or nearly.
    public struct BufferStarvation: Sendable, Equatable {
        public var enabled = true
        /// `bl` below this after startup is a low-buffer warning (0 is critical).
        public var lowBufferMs: Int64 = 500
        /// The episode resolves once `bl` is above this with no starvation flag.
        public var recoveredBufferMs: Int64 = 2_000
        /// For live streams the low-buffer threshold is at most this share of the buffer the
        /// session usually keeps, so a healthy low-latency buffer is not low.
        public var liveLowBufferRatio = 0.25
        public init() {}
    }

    /// Time from the first request to playback start.
    public struct StartupDelay: Sendable, Equatable {
        public var enabled = true
        public var warningMs: Int64 = 2_000
        /// Above this the finding is critical, and a session still starting fires as stuck.
        public var criticalMs: Int64 = 5_000
        public init() {}
    }

    /// Time from a seek to playback resuming (v2 `sta=k` to `sta=p`; v1 the first `su`
    /// request after playback began to the next request without `su`).
    public struct SlowSeek: Sendable, Equatable {
        public var enabled = true
        public var warningMs: Int64 = 2_000
        /// Above this the finding is critical, and a seek still going on fires as stuck.
        public var criticalMs: Int64 = 5_000
        public init() {}
    }

    /// Session bookkeeping.
    public struct Sessions: Sendable, Equatable {
        /// Samples up to this much older than the session's newest are placed in order;
        /// older ones are counted as late and ignored.
        public var reorderToleranceMs: Int64 = 2_000
        /// Sessions with no sample for this long (event time) are evicted.
        public var idleTimeoutMs: Int64 = 300_000
        /// At most this many live sessions; the least recently seen is evicted beyond it.
        public var maxLiveSessions = 1_000_000
        /// A silence this long after which the buffer is still there is a pause (v1 players
        /// do not say so): the buffer history restarts and the silence is not watch time.
        public var pauseGapMs: Int64 = 15_000
        /// A sample more than this ahead of the reference time (the wall clock when the
        /// daemon gives one, else the newest event time accepted) is implausible: counted as
        /// `future_timestamp` and kept out of the watermark and of its session.
        public var maxFutureMs: Int64 = 120_000
        public init() {}
    }

    /// Which findings notify which webhook endpoint.
    public struct Route: Sendable, Equatable {
        public var name: String
        /// The endpoint's name in the daemon configuration (`webhooks[].name`).
        public var webhook: String
        /// Finding types this route takes; empty means every type.
        public var types: Set<FindingType> = []
        public var minSeverity: Severity = .warning
        /// For `buffer_drop`: only drops of at least this many percent.
        public var minDropPercent: Double?
        /// Also notify when the episode resolves.
        public var sendResolved = true
        /// Re-notify a still-firing episode after this long; nil never repeats.
        public var repeatIntervalMs: Int64?
        /// Hold a firing notification back this long (wall clock) before it is sent: a viewer's
        /// finding that an incident covers meanwhile is folded into the incident's.
        public var groupWaitMs: Int64 = 0
        /// Finding fields whose equal values make one group: the group's notifications go out
        /// as one webhook (`group.firing`, `group.resolved`). Empty: one webhook per finding.
        public var groupBy: [GroupField] = []
        /// A group (or an incident's folded viewers) is notified again at most this often:
        /// findings joining a group meanwhile wait for the next one; an incident gets an
        /// `update` when viewers' notifications were folded into it since its last one.
        public var groupIntervalMs: Int64?
        /// At most this many webhooks on the route in any hour (all daemons sharing the table);
        /// beyond it notifications are kept as `rate_limited`, not sent.
        public var maxPerHour: Int?

        /// The finding fields a route can group by.
        public enum GroupField: String, Sendable, CaseIterable {
            case type, severity, edgeLocation = "edge_location", contentID = "content_id", sessionID = "session_id"

            /// The field's value in a finding (nil when it has none).
            public func value(of finding: Finding) -> String? {
                switch self {
                case .type: finding.type.rawValue
                case .severity: finding.severity.rawValue
                case .edgeLocation: finding.edgeLocation
                case .contentID: finding.contentID
                case .sessionID: finding.sessionID.isEmpty ? nil : finding.sessionID
                }
            }
        }

        public init(name: String, webhook: String) {
            self.name = name
            self.webhook = webhook
        }

        /// Whether a finding goes out on this route.
        public func matches(_ finding: Finding) -> Bool {
            if !types.isEmpty, !types.contains(finding.type) { return false }
            if finding.severity < minSeverity { return false }
            if finding.status == .resolved, !sendResolved { return false }
            if let minDropPercent, finding.type == .bufferDrop {
                guard case .double(let drop)? = finding.detail("drop_percent") else { return false }
                if drop < minDropPercent { return false }
            }
            return true
        }
    }

    public var bufferDrop = BufferDrop()
    public var bufferStarvation = BufferStarvation()
    public var startupDelay = StartupDelay()
    public var slowSeek = SlowSeek()
    public var sessions = Sessions()
    /// Cohort windows and incident rules.
    public var cohorts = CohortRules()
    public var routes: [Route] = [DetectionRules.defaultRoute, DetectionRules.incidentRoute]

    /// The default route: buffer drops of at least 70% to the `default` webhook, each held 30 s
    /// so that an incident covering it folds it.
    public static var defaultRoute: Route {
        var route = Route(name: "severe-buffer-drops", webhook: "default")
        route.types = [.bufferDrop]
        route.minSeverity = .warning
        route.minDropPercent = 70
        // Long enough for an incident on the viewer's edge or content to fold the page.
        route.groupWaitMs = 30_000
        return route
    }

    /// The default incident route: every incident, firing and resolved, to `default`.
    public static var incidentRoute: Route {
        var route = Route(name: "incidents", webhook: "default")
        route.types = [.incident]
        // Viewers folded into an open incident: an update at most every 5 minutes.
        route.groupIntervalMs = 300_000
        return route
    }

    public init() {}
}
