import CMCD
/// What one sample showed of its session, for cohort windows: the engine fills it after the
/// detectors ran, so cohorts count sessions without keeping sessions of their own.
public struct SessionObservation: Sendable, Equatable {
    /// The session's first sample in this cohort window (its window is `time / window_ms`).
    public var firstInWindow: Bool
    /// The session began with this sample.
    public var isNew: Bool
    /// Playback start was measured with this sample (ms from the first request).
    public var startupMs: Int32?
    /// The session is stalled now, or was until this sample (its stall time counts in this
    /// window: `stalledMs`), for the first time in this window. So a window whose rebuffer
    /// ratio breaches counts the sessions that made it: a stall's last seconds fall in the
    /// window of the request that ends it.
    public var firstStalledInWindow: Bool
    /// A critical buffer drop is open, for the first time in this window.
    public var firstCriticalDropInWindow: Bool
    /// The startup is stuck, for the first time in this window.
    public var firstStuckInWindow: Bool
    /// Time since the session's previous sample the viewer was watching (playing or
    /// stalled, not paused); gaps longer than `sessions.pause_gap_ms` count nothing.
    public var watchedMs: Int64
    /// Of which stalled.
    public var stalledMs: Int64
    /// The request's `br` (media requests only) and `mtp`, largest components, kbps.
    public var bitrateKbps: Int64?
    public var throughputKbps: Int64?

    public init(
        firstInWindow: Bool = true, isNew: Bool = false, startupMs: Int32? = nil, firstStalledInWindow: Bool = false,
        firstCriticalDropInWindow: Bool = false, firstStuckInWindow: Bool = false, watchedMs: Int64 = 0, stalledMs: Int64 = 0,
        bitrateKbps: Int64? = nil, throughputKbps: Int64? = nil
    ) {
        self.bitrateKbps = bitrateKbps
        self.throughputKbps = throughputKbps
        self.firstInWindow = firstInWindow
        self.isNew = isNew
        self.startupMs = startupMs
        self.firstStalledInWindow = firstStalledInWindow
        self.firstCriticalDropInWindow = firstCriticalDropInWindow
        self.firstStuckInWindow = firstStuckInWindow
        self.watchedMs = watchedMs
        self.stalledMs = stalledMs
    }

    /// The session before the detectors saw the sample.
    struct Before {
        var stalled: Bool
        var watching: Bool
        var startupMs: Int32

        /// Read field by field through the pointer: a `SessionState` argument would be a copy
        /// of the whole state (and a retain of everything it holds) per sample.
        init(_ session: UnsafeMutablePointer<SessionState>) {
            stalled = session.pointee.phase == .rebuffering || session.pointee.starvation?.stalledAt != nil
            watching = stalled || session.pointee.phase == .playing
            startupMs = session.pointee.qoe.startupMs
        }
    }

    /// Compares the session before and after a sample at `time`, and marks in the session
    /// what this window has counted of it.
    init(
        _ before: Before, _ session: inout SessionState, time: Int64, windowMs: Int64, gapMs: Int64, isNew: Bool, pauseGapMs: Int64,
        signals: CMCDSignals
    ) {
        let media = signals.objectType.map { $0 == .video || $0 == .muxed || $0 == .audio } ?? false
        bitrateKbps = media ? signals.encodedBitrate : nil
        throughputKbps = signals.measuredThroughput
        let window = Int32(truncatingIfNeeded: time / windowMs)
        firstInWindow = session.cohortWindow != window || isNew
        if firstInWindow {
            session.cohortWindow = window
            session.cohortFlags = 0
        }
        func first(_ condition: Bool, _ bit: UInt8, in session: inout SessionState) -> Bool {
            guard condition, session.cohortFlags & bit == 0 else { return false }
            session.cohortFlags |= bit
            return true
        }
        self.isNew = isNew
        startupMs = before.startupMs < 0 && session.qoe.startupMs >= 0 ? session.qoe.startupMs : nil
        let gap = gapMs <= pauseGapMs ? gapMs : 0
        watchedMs = before.watching ? gap : 0
        stalledMs = before.stalled ? gap : 0
        firstStalledInWindow = first(session.isStalled || stalledMs > 0, 1, in: &session)
        firstCriticalDropInWindow = first(session.drop?.severity == .critical, 2, in: &session)
        firstStuckInWindow = first(session.startup == .starting && session.startupStuckFired, 4, in: &session)
    }
}

extension SessionState {
    /// A real stall is going on (not only a low buffer).
    var isStalled: Bool { phase == .rebuffering || starvation?.stalledAt != nil }
}
