import CMCD
import CMCDRecords
import SentinelJSON

/// Counters of what the engine has done.
public struct DetectionStatistics: Sendable, Equatable {
    public struct FindingKey: Hashable, Sendable, Comparable {
        public var type: FindingType
        public var severity: Severity
        public var status: FindingStatus
        public init(type: FindingType, severity: Severity, status: FindingStatus) {
            self.type = type
            self.severity = severity
            self.status = status
        }
        public static func < (a: FindingKey, b: FindingKey) -> Bool {
            (a.type.rawValue, a.severity.rawValue, a.status.rawValue) < (b.type.rawValue, b.severity.rawValue, b.status.rawValue)
        }
        // Equality and hashing by case, not by the raw-value strings that the enums' own
        // conformances would compare and hash: a finding is counted here on the hot path.
        private var ordinal: Int {
            let type: Int
            switch self.type {
            case .bufferDrop: type = 0
            case .bufferStarvation: type = 1
            case .startupDelay: type = 2
            case .slowSeek: type = 3
            case .incident: type = 4
            }
            return type << 2 | (severity == .critical ? 2 : 0) | (status == .resolved ? 1 : 0)
        }
        public static func == (a: FindingKey, b: FindingKey) -> Bool { a.ordinal == b.ordinal }
        public func hash(into hasher: inout Hasher) { hasher.combine(ordinal) }
    }

    public var samples = 0
    /// Samples older than the session's newest by more than the reorder tolerance (ignored).
    public var late = 0
    /// Samples older than the session's newest but within tolerance (placed in order).
    public var reordered = 0
    /// Samples whose event time is outside `DetectionEngine.validTimes` (ignored).
    public var invalidTime = 0
    /// Samples implausibly far ahead of the reference time (`sessions.max_future_ms`; ignored).
    public var futureTimestamps = 0
    public var sessionsStarted = 0
    public var liveSessions = 0
    public var idleEvictions = 0
    public var capacityEvictions = 0
    public var findings: [FindingKey: Int] = [:]
    public init() {}

    /// Adds another engine's counters (live sessions excepted: they are a gauge).
    public mutating func add(_ other: DetectionStatistics) {
        samples += other.samples
        late += other.late
        reordered += other.reordered
        invalidTime += other.invalidTime
        futureTimestamps += other.futureTimestamps
        sessionsStarted += other.sessionsStarted
        idleEvictions += other.idleEvictions
        capacityEvictions += other.capacityEvictions
        findings.merge(other.findings, uniquingKeysWith: +)
    }
}

/// Why open episodes are being closed without a recovery.
enum SessionEnd: String {
    case idle = "session_idle"
    case evicted = "session_evicted"
    case endOfInput = "end_of_input"
}

/// The per-session detection state machine: feed samples in arrival order, get findings at
/// once. Pure: no IO, no clocks; time is the records' event time.
///
/// Memory is bounded by `rules.sessions.maxLiveSessions`; sessions idle for
/// `idleTimeoutMs` of event time are evicted as the watermark (the newest event time seen,
/// or a time given to `advance(to:)`) passes them.
public struct DetectionEngine: Sendable {
    public let rules: DetectionRules
    private let detectors: Detectors
    public private(set) var statistics = DetectionStatistics()
    /// The newest event time seen (ms); `Int64.min` before the first sample.
    public private(set) var watermark = Int64.min

    private var slots: [SessionState] = []
    @usableFromInline private(set) var index = SessionTable()
    private var links: [LRULink] = []
    private var freeSlots: [Int32] = []
    private var lruHead: Int32 = -1
    private var lruTail: Int32 = -1
    /// Deadlines at which a still-starting session becomes stuck, in creation order.
    private var stuckTimers: [(deadline: Int64, slot: Int32, generation: UInt32)] = []
    private var stuckTimersHead = 0
    private var nextHousekeeping = Int64.min
    /// The wall clock (ms) as the daemon last gave it; nil offline.
    private var wallClock: Int64?
    /// Consecutive samples ahead of the reference: this many in a row is the stream itself
    /// moving on (a replay of a later day, say), which is then followed.
    private var futureRun = 0
    static let futureRunToFollow = 32

    /// Event times the engine accepts (ms since the epoch); arithmetic on them cannot overflow.
    public static let validTimes: ClosedRange<Int64> = 0...(Int64(1) << 52)

    /// How many buffer observations a session keeps at most.
    static let windowCapacity = 64
    /// Housekeeping (idle eviction, stuck startups) runs at most this often in event time.
    static let housekeepingIntervalMs: Int64 = 1_000

    /// At most this many live sessions in this engine (the least recently seen is evicted
    /// beyond it): `sessions.max_live_sessions`, unless a daemon running several engines gives
    /// each what the others leave of that bound.
    public var sessionCapacity: Int

    public init(rules: DetectionRules = DetectionRules()) {
        self.rules = rules
        self.detectors = Detectors(rules: rules)
        sessionCapacity = rules.sessions.maxLiveSessions
    }

    /// Inlinable: the daemon reads it around every record, and a call would copy the engine.
    @inlinable public var liveSessionCount: Int { index.count }

    /// The oldest `Sample.position` that live state still depends on (a session still
    /// starting, a lookback window, an open episode), or nil when nothing is needed. Replaying
    /// the stream from there after a crash rebuilds the state, so a consumer commits no
    /// further than this. O(live sessions): call it per commit, not per record.
    public func restartPosition() -> Int64? {
        var oldest: Int64?
        var slot = lruHead
        // Through pointers: a session read out of the array would be copied whole (and
        // everything in it retained) per session.
        slots.withUnsafeBufferPointer { slots in
            links.withUnsafeBufferPointer { links in
                while slot >= 0 {
                    if let needed = SessionState.neededPosition(at: slots.baseAddress! + Int(slot)) { oldest = min(oldest ?? needed, needed) }
                    slot = links[Int(slot)].next
                }
            }
        }
        return oldest
    }

    /// A live session's quality of experience so far (the `qoe` object resolved findings
    /// carry), or nil when the session is not live.
    public func qualityOfExperience(sessionID: String) -> JSONValue? {
        var id = sessionID
        return id.withUTF8 { bytes -> JSONValue? in
            let key = SessionKey(bytes: bytes)
            guard let slot = findSlot(key, sessionID: sessionID) else { return nil }
            let session = slots[Int(slot)]
            return session.qoe.jsonValue(firstTime: session.firstTime, newestTime: session.newestTime)
        }
    }

    /// Tells the engine the wall clock (ms since the epoch): a sample further ahead of it than
    /// `sessions.max_future_ms` is implausible, as is one that far ahead of the stream's own
    /// newest time (the only reference offline).
    public mutating func noteWallClock(_ ms: Int64) { wallClock = ms }

    /// What the last `process` call saw of its session, for cohort windows; nil when the
    /// sample was not taken (late, invalid, implausible) or cohorts are off in the rules.
    public private(set) var lastObservation: SessionObservation?

    /// Feeds one sample; findings it causes are appended to `findings`.
    public mutating func process(_ sample: Sample, into findings: inout [Finding]) {
        let before = findings.count
        defer { if findings.count > before { count(findings[before...]) } }
        statistics.samples += 1
        let observing = rules.cohorts.enabled
        if observing { lastObservation = nil }
        guard Self.validTimes.contains(sample.time) else {
            statistics.invalidTime += 1
            return
        }
        if sample.time > watermark {
            if watermark > Int64.min || wallClock != nil, isImplausiblyAhead(sample.time) { return }
            watermark = sample.time
        }
        futureRun = 0

        let slot: Int32
        var gapMs: Int64 = 0
        var isNew = false
        var key = SessionKey()
        sample.withSessionIDBytes { key = SessionKey(bytes: $0) }
        if let existing = findSlot(key, sessionID: sample.sessionID) {
            slot = existing
            let newest = slots[Int(slot)].newestTime
            if sample.time < newest.subtractingSaturated(rules.sessions.reorderToleranceMs) {
                statistics.late += 1
                housekeepIfDue(into: &findings)
                return
            }
            if sample.time < newest {
                statistics.reordered += 1
            } else {
                gapMs = sample.time - newest
                slots[Int(slot)].newestTime = sample.time
            }
            touch(slot)
        } else {
            slot = createSession(for: sample, key: key, into: &findings)
            isNew = true
        }

        let signals = sample.cmcd.signals
        let detectors = self.detectors
        let (drop, starvation) = (rules.bufferDrop.enabled, rules.bufferStarvation.enabled)
        var observation: SessionObservation?
        let (pauseGapMs, windowMs) = (rules.sessions.pauseGapMs, rules.cohorts.windowMs)
        // One access to the session's state for all detectors (not one uniqueness and bounds
        // check per detector).
        slots.withUnsafeMutableBufferPointer { slots in
            let session = slots.baseAddress! + Int(slot)
            let was = observing ? SessionObservation.Before(session) : nil
            defer {
                if let was {
                    observation = SessionObservation(
                        was, &session.pointee, time: sample.time, windowMs: windowMs, gapMs: gapMs, isNew: isNew, pauseGapMs: pauseGapMs,
                        signals: signals)
                }
            }
            if let cid = sample.contentID, session.pointee.contentID != cid { session.pointee.contentID = cid }
            if let edge = sample.edgeLocation, session.pointee.edgeLocation != edge { session.pointee.edgeLocation = edge }
            let player = detectors.observePlayer(sample, signals, gapMs: gapMs, &session.pointee, into: &findings)
            // Startup is followed even with its detector off (the player state needs it); the
            // detector reads its own switch.
            detectors.detectStartup(sample, signals, &session.pointee, into: &findings)
            if drop { detectors.detectDrop(sample, signals, player, &session.pointee, into: &findings) }
            if starvation { detectors.detectStarvation(sample, signals, player, &session.pointee, into: &findings) }
        }
        if observing { lastObservation = observation }

        housekeepIfDue(into: &findings)
    }

    /// The slot of the live session with this key (the full id compared only when the key
    /// does not hold all of it).
    @inline(__always)
    private func findSlot(_ key: SessionKey, sessionID: @autoclosure () -> String) -> Int32? {
        index.find(hash: key.hash, matches: { slots[Int($0)].key.sameBytes(as: key) && (key.isComplete || slots[Int($0)].sessionID == sessionID()) })
    }

    /// Whether a sample newer than the watermark is too far ahead to believe (counted and left
    /// out), unless enough such samples in a row show that the stream itself moved on.
    private mutating func isImplausiblyAhead(_ time: Int64) -> Bool {
        let tolerance = rules.sessions.maxFutureMs
        let aheadOfStream = watermark > Int64.min && time > watermark.addingSaturated(tolerance)
        let aheadOfClock = wallClock.map { time > $0.addingSaturated(tolerance) } ?? false
        guard aheadOfStream || aheadOfClock else { return false }
        futureRun += 1
        if futureRun >= Self.futureRunToFollow { return false }
        statistics.futureTimestamps += 1
        return true
    }

    /// Evicts the least recently seen session (resolving its open episodes), counted as a
    /// capacity eviction; false when there is none. For a daemon that bounds the sessions of
    /// several engines together.
    @discardableResult
    public mutating func evictLeastRecentlySeen(into findings: inout [Finding]) -> Bool {
        guard lruHead >= 0 else { return false }
        let before = findings.count
        defer { count(findings[before...]) }
        statistics.capacityEvictions += 1
        endSession(lruHead, reason: .evicted, at: watermark, into: &findings)
        return true
    }

    /// Convenience for tests and tools: process and return the findings.
    public mutating func process(_ sample: Sample) -> [Finding] {
        var out: [Finding] = []
        process(sample, into: &out)
        return out
    }

    /// Moves the watermark forward (for example from a wall clock when records stop), evicting
    /// idle sessions and firing stuck startups that this proves.
    public mutating func advance(to time: Int64, into findings: inout [Finding]) {
        let before = findings.count
        defer { count(findings[before...]) }
        let clamped = min(max(time, Self.validTimes.lowerBound), Self.validTimes.upperBound)
        if clamped > watermark { watermark = clamped }
        housekeep(into: &findings)
    }

    /// Ends all sessions: every open episode is resolved (at end of input).
    public mutating func finish(into findings: inout [Finding]) {
        let before = findings.count
        defer { count(findings[before...]) }
        housekeep(into: &findings)
        var slot = lruHead
        while slot >= 0 {
            let next = links[Int(slot)].next
            endSession(slot, reason: .endOfInput, at: max(watermark, slots[Int(slot)].newestTime), into: &findings)
            slot = next
        }
    }

    private mutating func count(_ new: ArraySlice<Finding>) {
        for finding in new {
            statistics.findings[.init(type: finding.type, severity: finding.severity, status: finding.status), default: 0] += 1
        }
    }

    // MARK: - Checkpoints (see EngineCheckpoint.swift)

    /// The live sessions, least recently seen first.
    func forEachSessionInRecencyOrder(_ body: (SessionState) -> Void) {
        var slot = lruHead
        while slot >= 0 {
            body(slots[Int(slot)])
            slot = links[Int(slot)].next
        }
    }

    /// The event-time clock a checkpoint keeps.
    var clock: (watermark: Int64, nextHousekeeping: Int64) { (watermark, nextHousekeeping) }

    /// Restores the clock of a checkpoint (before its sessions).
    mutating func restoreClock(watermark: Int64, nextHousekeeping: Int64) {
        self.watermark = watermark
        self.nextHousekeeping = nextHousekeeping
    }

    /// Adds a session of a checkpoint as the most recently seen, indexed under this process's
    /// hash key, with its stuck-startup timer; false if its id is already live.
    mutating func restoreSession(_ restored: SessionState) -> Bool {
        var state = restored
        state.key = SessionKey(state.sessionID)
        let key = state.key
        guard findSlot(key, sessionID: state.sessionID) == nil else { return false }
        let slot = Int32(slots.count)
        state.generation = 0
        slots.append(state)
        links.append(LRULink())
        index.insert(hash: key.hash, slot: slot)
        linkAtTail(slot)
        statistics.liveSessions = index.count
        if state.startup == .starting, rules.startupDelay.enabled {
            let deadline = state.firstTime.addingSaturated(rules.startupDelay.criticalMs)
            // Timers fire in deadline order; sessions arrive least recently seen first.
            let at = stuckTimers.lastIndex(where: { $0.deadline <= deadline }).map { $0 + 1 } ?? stuckTimersHead
            stuckTimers.insert((deadline, slot, 0), at: at)
        }
        return true
    }

    // MARK: - Session table

    /// Whether the first sample of a session is the start of playback, so that startup can
    /// be measured: a manifest or init segment requested with `su`, or a v2 `sta` of starting
    /// or preloading. A session first seen anywhere else (joined mid-stream, or replayed from
    /// a committed offset after a restart) is not judged, rather than judged wrongly.
    static func looksLikeStart(_ sample: Sample) -> Bool {
        let cmcd = sample.cmcd
        if let state = cmcd.state { return state == .starting || state == .preloading }
        guard cmcd.startup, let ot = cmcd.objectType else { return false }
        return ot == .manifest || ot == .initSegment
    }

    private mutating func createSession(for sample: Sample, key: SessionKey, into findings: inout [Finding]) -> Int32 {
        if index.count >= sessionCapacity, lruHead >= 0 {
            statistics.capacityEvictions += 1
            endSession(lruHead, reason: .evicted, at: watermark, into: &findings)
        }
        let starting = Self.looksLikeStart(sample)
        var state = SessionState(sessionID: sample.sessionID, key: key, firstTime: sample.time, startup: starting ? .starting : .done)
        // First seen at an urgent media request: a startup whose manifest record was sampled
        // away, or a replay that begins at a seek. Neither is timed; the player counts as
        // playing from its first request without `su`.
        state.phase = starting || sample.cmcd.startup ? .starting : .playing
        state.firstPosition = sample.position
        if starting { state.starvationCountSeen = 0 }
        let slot: Int32
        if let reused = freeSlots.popLast() {
            slot = reused
            state.generation = slots[Int(slot)].generation &+ 1
            slots[Int(slot)] = state
        } else {
            slot = Int32(slots.count)
            slots.append(state)
            links.append(LRULink())
        }
        index.insert(hash: key.hash, slot: slot)
        linkAtTail(slot)
        statistics.sessionsStarted += 1
        statistics.liveSessions = index.count
        if starting, rules.startupDelay.enabled {
            stuckTimers.append((sample.time.addingSaturated(rules.startupDelay.criticalMs), slot, state.generation))
        }
        return slot
    }

    /// Runs `body` on the recency list in place: the links, its head and its tail (one
    /// access to the links, however many steps `body` takes).
    private mutating func withRecencyList(_ body: (UnsafeMutableBufferPointer<LRULink>, inout Int32, inout Int32) -> Void) {
        var (head, tail) = (lruHead, lruTail)
        links.withUnsafeMutableBufferPointer { body($0, &head, &tail) }
        (lruHead, lruTail) = (head, tail)
    }

    private static func linkAtTail(_ slot: Int32, _ links: UnsafeMutableBufferPointer<LRULink>, _ head: inout Int32, _ tail: inout Int32) {
        links[Int(slot)] = LRULink(prev: tail, next: -1)
        if tail >= 0 { links[Int(tail)].next = slot } else { head = slot }
        tail = slot
    }

    private static func unlink(_ slot: Int32, _ links: UnsafeMutableBufferPointer<LRULink>, _ head: inout Int32, _ tail: inout Int32) {
        let prev = links[Int(slot)].prev
        let next = links[Int(slot)].next
        if prev >= 0 { links[Int(prev)].next = next } else { head = next }
        if next >= 0 { links[Int(next)].prev = prev } else { tail = prev }
    }

    private mutating func linkAtTail(_ slot: Int32) { withRecencyList { Self.linkAtTail(slot, $0, &$1, &$2) } }

    private mutating func unlink(_ slot: Int32) { withRecencyList { Self.unlink(slot, $0, &$1, &$2) } }

    /// Moves a session to the tail (most recently seen); this runs on every request.
    private mutating func touch(_ slot: Int32) {
        guard slot != lruTail else { return }
        withRecencyList {
            Self.unlink(slot, $0, &$1, &$2)
            Self.linkAtTail(slot, $0, &$1, &$2)
        }
    }

    /// Resolves the session's open episodes and frees its slot.
    private mutating func endSession(_ slot: Int32, reason: SessionEnd, at time: Int64, into findings: inout [Finding]) {
        var session = slots[Int(slot)]
        if let drop = session.drop {
            detectors.emit(
                &findings, session, .bufferDrop, .resolved, drop.severity, startedAt: drop.startedAt, at: time,
                summary: "Buffer drop episode closed: \(reason.rawValue.replacingUnderscoresWithSpaces)",
                details: detectors.dropDetails(drop) + [("resolution", .string(reason.rawValue))])
            session.drop = nil
        }
        if let starvation = session.starvation {
            detectors.closeStarvation(starvation, at: time, resolution: reason.rawValue, &session, into: &findings)
        }
        if session.startup == .starting, session.startupStuckFired {
            detectors.resolveStuckStartup(&session, at: time, resolution: reason.rawValue, into: &findings)
        }
        if session.phase == .seeking, session.seekStuckFired {
            detectors.resolveStuckWait(
                .slowSeek, what: "Seek", waitKey: "seek_latency_ms", stuck: \.seekStuckFired, startedAt: session.seekStartedAt,
                threshold: rules.slowSeek.criticalMs, &session, at: time, resolution: reason.rawValue, into: &findings)
        }
        switch reason {
        case .idle: statistics.idleEvictions += 1
        default: break
        }
        unlink(slot)
        index.remove(hash: session.key.hash, slot: slot)
        var empty = SessionState(sessionID: "", key: SessionKey(), firstTime: 0, startup: .done)
        empty.generation = session.generation
        slots[Int(slot)] = empty
        freeSlots.append(slot)
        statistics.liveSessions = index.count
    }

    private mutating func housekeepIfDue(into findings: inout [Finding]) {
        if watermark >= nextHousekeeping { housekeep(into: &findings) }
    }

    private mutating func housekeep(into findings: inout [Finding]) {
        guard watermark > Int64.min else { return }  // nothing seen yet
        nextHousekeeping = watermark.addingSaturated(Self.housekeepingIntervalMs)
        // Stuck startups.
        while stuckTimersHead < stuckTimers.count, stuckTimers[stuckTimersHead].deadline < watermark {
            let timer = stuckTimers[stuckTimersHead]
            stuckTimersHead += 1
            let slot = Int(timer.slot)
            guard slot < slots.count, slots[slot].generation == timer.generation, !slots[slot].sessionID.isEmpty else { continue }
            var session = slots[slot]
            if session.startup == .starting, !session.startupStuckFired,
                watermark.subtractingSaturated(session.firstTime) > rules.startupDelay.criticalMs
            {
                detectors.fireStuck(&session, at: watermark, into: &findings)
                slots[slot] = session
            }
        }
        if stuckTimersHead > 1024, stuckTimersHead * 2 > stuckTimers.count {
            stuckTimers.removeFirst(stuckTimersHead)
            stuckTimersHead = 0
        }
        // Idle sessions: the least recently seen are at the head.
        let idleBefore = watermark.subtractingSaturated(rules.sessions.idleTimeoutMs)
        while lruHead >= 0, slots[Int(lruHead)].newestTime < idleBefore {
            endSession(lruHead, reason: .idle, at: watermark, into: &findings)
        }
    }

    // MARK: - Detectors

    /// States in which a low buffer means the viewer is (about to be) stalled.
    static func canStarve(_ state: CMCDPlayerState?) -> Bool {
        switch state {
        case nil, .playing?, .rebuffering?, .waiting?: return true
        default: return false
        }
    }

    static func describe(trigger: String, _ signals: CMCDSignals, _ bl: Int64?) -> String {
        let text: SummaryText
        switch trigger {
        case "bs": text = "player reported buffer starvation (bs)"
        case "bsa": text = "player's starvation count rose to \(signals.starvationCount ?? 0) (bsa)"
        case "bsd": text = "player reported a starvation of \(signals.starvationDuration ?? 0) ms (bsd)"
        case "sta=r": text = "player is rebuffering (sta=r)"
        case "bl=0": text = "buffer is empty (bl=0)"
        default: text = "buffer is low (\(bl ?? 0) ms)"
        }
        return text.text
    }
}

extension Int64 {
    /// `self - other`, clamped to the representable range (event times come from viewers).
    func subtractingSaturated(_ other: Int64) -> Int64 {
        let (result, overflow) = subtractingReportingOverflow(other)
        return overflow ? (other > 0 ? .min : .max) : result
    }

    func addingSaturated(_ other: Int64) -> Int64 {
        let (result, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : result
    }
}

extension String {
    var replacingUnderscoresWithSpaces: String { String(map { $0 == "_" ? " " : $0 }) }
}

/// The three detectors over one session's state; they read the rules and append findings.
struct Detectors: Sendable {
    // The rules' numbers only, no collections: the engine copies this for each call, and a
    // copy of plain values costs no reference counting.
    let startupDelay: DetectionRules.StartupDelay
    let bufferStarvation: DetectionRules.BufferStarvation
    let slowSeek: DetectionRules.SlowSeek
    let reorderToleranceMs: Int64
    let pauseGapMs: Int64
    let liveMinReferenceMs: Int64
    /// `rules.bufferDrop` without its object types (those are `dropObjectTypes`).
    let drop: (lookbackMs: Int64, minReferenceMs: Int64, warningDropRatio: Double, criticalDropRatio: Double, recoveryRatio: Double)
    /// `rules.bufferDrop.objectTypes` as a bit set (no hashing per sample).
    private let dropObjectTypes: UInt32

    init(rules: DetectionRules) {
        self.startupDelay = rules.startupDelay
        self.bufferStarvation = rules.bufferStarvation
        self.slowSeek = rules.slowSeek
        reorderToleranceMs = rules.sessions.reorderToleranceMs
        pauseGapMs = rules.sessions.pauseGapMs
        liveMinReferenceMs = rules.bufferDrop.liveMinReferenceMs
        let d = rules.bufferDrop
        drop = (d.lookbackMs, d.minReferenceMs, d.warningDropRatio, d.criticalDropRatio, d.recoveryRatio)
        dropObjectTypes = d.objectTypes.reduce(0) { $0 | Self.bit($1) }
    }

    static func bit(_ ot: CMCDObjectType) -> UInt32 {
        switch ot {
        case .manifest: return 1 << 0
        case .audio: return 1 << 1
        case .video: return 1 << 2
        case .muxed: return 1 << 3
        case .initSegment: return 1 << 4
        case .caption: return 1 << 5
        case .timedText: return 1 << 6
        case .key: return 1 << 7
        case .other: return 1 << 8
        }
    }

    func detectStartup(_ sample: Sample, _ cmcd: CMCDSignals, _ session: inout SessionState, into findings: inout [Finding]) {
        guard session.startup == .starting else { return }
        let t = sample.time
        if t < session.firstTime { session.firstTime = t }
        if let state = cmcd.state, state == .quit || state == .ended || state == .fatalError {
            // The viewer left (or playback failed) before it started: an exit before video
            // start, not a startup to time.
            if session.startupStuckFired, startupDelay.enabled { resolveStuckStartup(&session, at: t, resolution: PlayerEvent.ended.rawValue, into: &findings) }
            session.startup = .done
            return
        }
        var startupMs: Int64?
        var source = ""
        if cmcd.startup, cmcd.isMediaRequest {
            if let taken = sample.timeTaken, taken >= 0, taken < 600 {
                session.startupRequestsDoneAt = max(session.startupRequestsDoneAt, t + Int64((taken * 1000).rounded()))
            }
            if let d = sample.cmcd.objectDuration {
                if cmcd.objectType == .audio {
                    session.startupAudioMs = Int32(clamping: Int64(session.startupAudioMs) + d)
                } else {
                    session.startupMediaMs = Int32(clamping: Int64(session.startupMediaMs) + d)
                }
            }
        }
        if let msd = cmcd.mediaStartDelay, msd >= 0 {
            startupMs = msd
            source = "msd"
        } else if cmcd.state == .playing {
            startupMs = session.startedNoLaterThan(t, bufferMs: cmcd.bufferLength, audio: cmcd.objectType == .audio) - session.firstTime
            source = "sta"
        } else if !cmcd.startup, cmcd.bufferLength != nil, cmcd.isMediaRequest, t > session.firstTime,
            cmcd.state == nil || cmcd.state == .playing, cmcd.objectType != .audio || !session.sawVideo
        {
            startupMs = session.startedNoLaterThan(t, bufferMs: cmcd.bufferLength, audio: cmcd.objectType == .audio) - session.firstTime
            source = "first_buffered_request"
        }
        let warning = startupDelay.warningMs
        let critical = startupDelay.criticalMs
        guard let startupMs else {
            if startupDelay.enabled, t - session.firstTime > critical, !session.startupStuckFired { fireStuck(&session, at: t, into: &findings) }
            return
        }
        session.startup = .done
        session.playbackStarted = true
        session.phase = .playing
        session.qoe.startupMs = Int32(clamping: startupMs)
        guard startupDelay.enabled, startupMs > warning || session.startupStuckFired else { return }
        reportStartup(startupMs, source: source, &session, at: t, into: &findings)
    }

    /// A slow (or stuck, now started) startup's findings. Out of line, as every finding
    /// path is: the per-request code stays small and dense.
    @inline(never)
    func reportStartup(_ startupMs: Int64, source: String, _ session: inout SessionState, at t: Int64, into findings: inout [Finding]) {
        reportWait(
            .startupDelay, waited: ("startup_ms", startupMs), extra: [("source", .string(source))], thresholds: (startupDelay.warningMs, startupDelay.criticalMs),
            stuck: \.startupStuckFired, startedAt: session.firstTime, firing: "Slow startup: playback started after \(seconds: startupMs)",
            resolved: "Playback started after \(seconds: startupMs)", &session, at: t, into: &findings)
    }

    /// A wait (for playback to start, or to resume after a seek) that took longer than its
    /// warning threshold: a firing finding, unless the wait already fired as stuck, and its
    /// resolution, under the episode's one id.
    func reportWait(
        _ type: FindingType, waited: (key: String, ms: Int64), extra: [(key: String, value: JSONValue)], thresholds: (warning: Int64, critical: Int64),
        stuck: WritableKeyPath<SessionState, Bool>, startedAt: Int64, firing: SummaryText, resolved: SummaryText, _ session: inout SessionState,
        at t: Int64, into findings: inout [Finding]
    ) {
        let wasStuck = session[keyPath: stuck]
        let severity: Severity = wasStuck || waited.ms > thresholds.critical ? .critical : .warning
        let details: [(key: String, value: JSONValue)] =
            [(waited.key, .int(waited.ms)), ("threshold_ms", .int(severity == .critical ? thresholds.critical : thresholds.warning))] + extra
            + [("stuck", .bool(wasStuck))]
        if !wasStuck { emit(&findings, session, type, .firing, severity, startedAt: startedAt, at: t, summary: firing, details: details) }
        emit(&findings, session, type, .resolved, severity, startedAt: startedAt, at: t, summary: resolved, details: details)
        session[keyPath: stuck] = false
    }

    /// A stuck startup that ends without playback (the session ended or the viewer left).
    @inline(never)
    func resolveStuckStartup(_ session: inout SessionState, at time: Int64, resolution: String, into findings: inout [Finding]) {
        resolveStuckWait(
            .startupDelay, what: "Startup", waitKey: "startup_ms", stuck: \.startupStuckFired, startedAt: session.firstTime,
            threshold: startupDelay.criticalMs, &session, at: time, resolution: resolution, into: &findings)
    }

    /// A wait (startup, or a seek) that fired as stuck and ends without playback.
    func resolveStuckWait(
        _ type: FindingType, what: String, waitKey: String, stuck: WritableKeyPath<SessionState, Bool>, startedAt: Int64, threshold: Int64,
        _ session: inout SessionState, at time: Int64, resolution: String, into findings: inout [Finding]
    ) {
        emit(
            &findings, session, type, .resolved, .critical, startedAt: startedAt, at: time,
            summary: "\(what) never completed (\(resolution.replacingUnderscoresWithSpaces))",
            details: [
                (waitKey, .null), ("elapsed_ms", .int(time - startedAt)), ("threshold_ms", .int(threshold)), ("stuck", .bool(true)),
                ("resolution", .string(resolution)),
            ])
        session[keyPath: stuck] = false
    }

    @inline(never)
    func fireStuck(_ session: inout SessionState, at time: Int64, into findings: inout [Finding]) {
        fireStuckWait(
            .startupDelay, waitKey: "startup_ms", stuck: \.startupStuckFired, startedAt: session.firstTime,
            threshold: startupDelay.criticalMs, summary: "Startup stuck: no playback \(seconds: time - session.firstTime) after the first request",
            &session, at: time, into: &findings)
    }

    /// A wait (startup, or a seek) still going on past its critical threshold fires as stuck.
    func fireStuckWait(
        _ type: FindingType, waitKey: String, stuck: WritableKeyPath<SessionState, Bool>, startedAt: Int64, threshold: Int64,
        summary: SummaryText, _ session: inout SessionState, at time: Int64, into findings: inout [Finding]
    ) {
        session[keyPath: stuck] = true
        emit(
            &findings, session, type, .firing, .critical, startedAt: startedAt, at: time, summary: summary,
            details: [(waitKey, .null), ("elapsed_ms", .int(time - startedAt)), ("threshold_ms", .int(threshold)), ("stuck", .bool(true))])
    }

    func detectDrop(_ sample: Sample, _ cmcd: CMCDSignals, _ player: PlayerTransition, _ session: inout SessionState, into findings: inout [Finding]) {
        if player.resetWindow { restartBufferHistory(&session, because: player.reason, at: sample.time, into: &findings) }
        // The requests of a seek, and those of a paused or departed player, are not judged.
        if player.inSeek || player.idle { return }
        guard let bl = cmcd.bufferLength, bl >= 0 else { return }
        if let ot = cmcd.objectType, dropObjectTypes & Self.bit(ot) == 0 { return }
        let t = sample.time
        let cls = ObjectClass.of(cmcd.objectType)
        let current = min(bl, Int64(Int32.max))
        let r = drop
        if var episode = session.drop {
            // A sample from before the episode began (reordered) says nothing about it.
            if episode.objectClass == cls, t >= episode.startedAt {
                if Double(current) >= r.recoveryRatio * Double(episode.referenceMs) {
                    resolveDrop(episode, current: current, &session, at: t, into: &findings)
                } else {
                    episode.lowestMs = min(episode.lowestMs, current)
                    if episode.severity == .warning, Double(current) <= (1 - r.criticalDropRatio) * Double(episode.referenceMs) {
                        escalateDrop(&episode, current: current, session, at: t, into: &findings)
                    }
                    session.drop = episode
                }
            }
        } else if let reference = session.reference(objectClass: cls, from: t - r.lookbackMs, before: t),
            reference.ms >= (cmcd.isLive ? max(r.minReferenceMs, liveMinReferenceMs) : r.minReferenceMs),
            Double(current) <= (1 - r.warningDropRatio) * Double(reference.ms)
        {
            fireDrop(reference: reference, current: current, objectClass: cls, sample, cmcd, &session, into: &findings)
        }
        session.remember(
            BufferObservation(time: t, position: sample.position, bufferLength: Int32(current), objectClass: cls),
            keepFrom: session.newestTime - r.lookbackMs - reorderToleranceMs, capacity: DetectionEngine.windowCapacity)
    }

    /// The buffer history no longer describes the buffer (a seek flushed it, the viewer paused
    /// or left): it starts again, and an open drop episode closes with the reason.
    @inline(never)
    func restartBufferHistory(_ session: inout SessionState, because event: PlayerEvent, at t: Int64, into findings: inout [Finding]) {
        session.window.removeAll()
        guard let episode = session.drop else { return }
        emit(
            &findings, session, .bufferDrop, .resolved, episode.severity, startedAt: episode.startedAt, at: t,
            summary: "Buffer drop episode closed: the player reported a \(event == .ended ? "session end" : event.rawValue)",
            details: dropDetails(episode) + [("resolution", .string(event.rawValue)), ("duration_ms", .int(t - episode.startedAt))])
        session.drop = nil
    }

    @inline(never)
    func fireDrop(
        reference measured: (ms: Int64, position: Int64), current: Int64, objectClass: UInt8, _ sample: Sample, _ cmcd: CMCDSignals,
        _ session: inout SessionState, into findings: inout [Finding]
    ) {
        let r = drop
        let t = sample.time
        let reference = measured.ms
        let severity: Severity = Double(current) <= (1 - r.criticalDropRatio) * Double(reference) ? .critical : .warning
        let percent = Self.dropPercent(reference: reference, current: current)
        let episode = DropEpisode(
            startedAt: t, startPosition: sample.position, referencePosition: measured.position, referenceMs: reference, objectClass: objectClass,
            severity: severity, dropPercent: percent, lowestMs: current)
        session.drop = episode
        emit(
            &findings, session, .bufferDrop, .firing, severity, startedAt: t, at: t,
            summary: "Buffer dropped \(oneDecimal: percent)% (\(reference) ms to \(current) ms) within \(seconds: r.lookbackMs)",
            details: [
                ("reference_bl_ms", .int(reference)), ("current_bl_ms", .int(current)), ("drop_percent", .double(percent)),
                ("window_ms", .int(r.lookbackMs)), ("object_type", cmcd.objectType.map { .string($0.rawValue) } ?? .null),
            ])
    }

    /// The same episode got worse: fire again under the same id, now critical.
    @inline(never)
    func escalateDrop(_ episode: inout DropEpisode, current: Int64, _ session: SessionState, at t: Int64, into findings: inout [Finding]) {
        episode.severity = .critical
        episode.dropPercent = Self.dropPercent(reference: episode.referenceMs, current: current)
        emit(
            &findings, session, .bufferDrop, .firing, .critical, startedAt: episode.startedAt, at: t,
            summary: "Buffer drop escalated: \(oneDecimal: episode.dropPercent)% (\(episode.referenceMs) ms to \(current) ms)",
            details: dropDetails(episode) + [("current_bl_ms", .int(current)), ("escalated", .bool(true))])
    }

    @inline(never)
    func resolveDrop(_ episode: DropEpisode, current: Int64, _ session: inout SessionState, at t: Int64, into findings: inout [Finding]) {
        emit(
            &findings, session, .bufferDrop, .resolved, episode.severity, startedAt: episode.startedAt, at: t,
            summary: "Buffer recovered to \(current) ms (reference \(episode.referenceMs) ms) after \(seconds: t - episode.startedAt)",
            details: dropDetails(episode) + [("recovered_bl_ms", .int(current)), ("duration_ms", .int(t - episode.startedAt))])
        session.drop = nil
    }

    /// How far `current` is below `reference`, in percent with one decimal.
    static func dropPercent(reference: Int64, current: Int64) -> Double {
        (Double(reference - current) / Double(reference) * 1000).rounded() / 10
    }

    func dropDetails(_ episode: DropEpisode) -> [(key: String, value: JSONValue)] {
        [
            ("reference_bl_ms", .int(episode.referenceMs)), ("lowest_bl_ms", .int(episode.lowestMs)),
            ("drop_percent", .double(episode.dropPercent)), ("window_ms", .int(drop.lookbackMs)),
        ]
    }

    func detectStarvation(
        _ sample: Sample, _ cmcd: CMCDSignals, _ player: PlayerTransition, _ session: inout SessionState, into findings: inout [Finding]
    ) {
        let t = sample.time
        if player.resetWindow, player.reason == .seek || player.reason == .ended, let episode = session.starvation, t >= episode.startedAt {
            // The viewer moved away from (or left) the stall: the episode ends here.
            closeStarvation(episode, at: t, resolution: player.reason.rawValue, &session, into: &findings)
        }
        // Startup and seeking are not stalls (CTA-2066); the counter is still followed.
        if player.inSeek || session.startup == .starting {
            if let count = cmcd.starvationCount, session.starvationCountSeen >= 0 || session.startup == .starting {
                session.starvationCountSeen = max(session.starvationCountSeen, count)
            }
            return
        }
        var trigger: String?
        if cmcd.bufferStarvation { trigger = "bs" }
        if let count = cmcd.starvationCount {
            if session.starvationCountSeen >= 0, count > session.starvationCountSeen, trigger == nil { trigger = "bsa" }
            session.starvationCountSeen = max(session.starvationCountSeen, count)
        }
        if trigger == nil, let duration = cmcd.starvationDuration, duration > 0 { trigger = "bsd" }
        if trigger == nil, cmcd.state == .rebuffering { trigger = "sta=r" }
        let starved = trigger != nil
        var severity: Severity = .critical
        let bl = cmcd.isMediaRequest ? cmcd.bufferLength : nil
        var lowBuffer = bufferStarvation.lowBufferMs
        if cmcd.isLive, session.steadyBufferMs > 0 {
            lowBuffer = min(lowBuffer, Int64(Double(session.steadyBufferMs) * bufferStarvation.liveLowBufferRatio))
        }
        if !starved, !player.idle, let bl, bl < lowBuffer, session.startup == .done, !cmcd.startup,
            DetectionEngine.canStarve(cmcd.state)
        {
            trigger = bl == 0 ? "bl=0" : "low_buffer"
            severity = bl == 0 ? .critical : .warning
        }
        if var episode = session.starvation {
            // A sample from before the episode began (reordered) says nothing about it.
            guard t >= episode.startedAt else { return }
            if let trigger {
                if let bl { episode.lowestMs = min(episode.lowestMs ?? bl, bl) }
                if severity > episode.severity {
                    escalateStarvation(&episode, severity: severity, trigger: trigger, bl: bl, cmcd, &session, at: t, into: &findings)
                }
                session.starvation = episode
            } else if let bl, bl > bufferStarvation.recoveredBufferMs {
                resolveStarvation(episode, bl: bl, &session, at: t, into: &findings)
            }
        } else if let trigger {
            fireStarvation(severity: severity, trigger: trigger, bl: bl, sample, cmcd, &session, into: &findings)
        }
    }

    /// Closes a starvation episode without a recovery (the stall's time still counts).
    @inline(never)
    func closeStarvation(_ episode: StarvationEpisode, at time: Int64, resolution: String, _ session: inout SessionState, into findings: inout [Finding]) {
        endStarvation(
            episode, at: time, summary: "Starvation episode closed after \(seconds: time - episode.startedAt): \(resolution.replacingUnderscoresWithSpaces)",
            adding: [("resolution", .string(resolution))], &session, into: &findings)
    }

    /// Resolves a starvation episode: its stall time goes to the session's QoE.
    func endStarvation(
        _ episode: StarvationEpisode, at time: Int64, summary: SummaryText, adding extra: [(key: String, value: JSONValue)],
        _ session: inout SessionState, into findings: inout [Finding]
    ) {
        countStall(episode, until: time, &session)
        emit(
            &findings, session, .bufferStarvation, .resolved, episode.severity, startedAt: episode.startedAt, at: time, summary: summary,
            details: starvationDetails(episode, until: time) + extra)
        session.starvation = nil
    }

    /// Adds a finished episode's stall time to the session's QoE.
    func countStall(_ episode: StarvationEpisode, until time: Int64, _ session: inout SessionState) {
        if let stalledAt = episode.stalledAt { session.qoe.rebufferMs = SessionQoE.clampedAdd(session.qoe.rebufferMs, time - stalledAt) }
    }

    @inline(never)
    func fireStarvation(
        severity: Severity, trigger: String, bl: Int64?, _ sample: Sample, _ cmcd: CMCDSignals, _ session: inout SessionState,
        into findings: inout [Finding]
    ) {
        let t = sample.time
        let episode = StarvationEpisode(
            startedAt: t, startPosition: sample.position, severity: severity, trigger: trigger, lowestMs: bl,
            stalledAt: severity == .critical ? t : nil)
        if severity == .critical { session.qoe.rebufferCount &+= 1 }
        session.starvation = episode
        emit(
            &findings, session, .bufferStarvation, .firing, severity, startedAt: t, at: t,
            summary: "Starvation: \(DetectionEngine.describe(trigger: trigger, cmcd, bl))",
            details: triggerDetails(trigger, bl: bl))
    }

    /// The same episode got worse: fire again under the same id, now critical.
    @inline(never)
    func escalateStarvation(
        _ episode: inout StarvationEpisode, severity: Severity, trigger: String, bl: Int64?, _ cmcd: CMCDSignals, _ session: inout SessionState,
        at t: Int64, into findings: inout [Finding]
    ) {
        episode.severity = severity
        episode.trigger = trigger
        if severity == .critical, episode.stalledAt == nil {
            episode.stalledAt = t
            session.qoe.rebufferCount &+= 1
        }
        emit(
            &findings, session, .bufferStarvation, .firing, severity, startedAt: episode.startedAt, at: t,
            summary: "Starvation escalated: \(DetectionEngine.describe(trigger: trigger, cmcd, bl))",
            details: triggerDetails(trigger, bl: bl) + [("escalated", .bool(true))])
    }

    @inline(never)
    func resolveStarvation(_ episode: StarvationEpisode, bl: Int64, _ session: inout SessionState, at t: Int64, into findings: inout [Finding]) {
        endStarvation(
            episode, at: t, summary: "Buffer recovered to \(bl) ms after \(seconds: t - episode.startedAt) of starvation",
            adding: [("recovered_bl_ms", .int(bl))], &session, into: &findings)
    }

    /// What set off a starvation finding (firing or escalated).
    func triggerDetails(_ trigger: String, bl: Int64?) -> [(key: String, value: JSONValue)] {
        [("trigger", .string(trigger)), ("bl_ms", bl.map(JSONValue.int) ?? .null), ("threshold_ms", .int(bufferStarvation.lowBufferMs))]
    }

    func starvationDetails(_ episode: StarvationEpisode, until time: Int64) -> [(key: String, value: JSONValue)] {
        [
            ("trigger", .string(episode.trigger)),
            ("lowest_bl_ms", episode.lowestMs.map(JSONValue.int) ?? .null), ("duration_ms", .int(time - episode.startedAt)),
        ]
    }

    func emit(
        _ findings: inout [Finding], _ session: SessionState, _ type: FindingType, _ status: FindingStatus,
        _ severity: Severity, startedAt: Int64, at time: Int64, summary: SummaryText, details: [(key: String, value: JSONValue)]
    ) {
        // A resolved finding carries the session's QoE so far.
        let details = status == .resolved ? details + [("qoe", session.qoe.jsonValue(firstTime: session.firstTime, newestTime: max(session.newestTime, time)))] : details
        findings.append(
            Finding(
                type: type, status: status, severity: severity, sessionID: session.sessionID, contentID: session.contentID,
                edgeLocation: session.edgeLocation, startedAt: startedAt, detectedAt: time, summary: summary.text, details: details))
    }
}
