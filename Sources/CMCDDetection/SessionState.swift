import CMCD

/// One buffer observation in a session's lookback window.
struct BufferObservation {
    var time: Int64
    var position: Int64
    var bufferLength: Int32
    /// The object type's raw code (`ObjectClass`), so drops compare like with like.
    var objectClass: UInt8
}

/// Groups object types whose buffer reports are comparable.
enum ObjectClass {
    static func of(_ ot: CMCDObjectType?) -> UInt8 {
        switch ot {
        case .audio?: return 1
        case .video?: return 2
        case .muxed?: return 3
        case nil: return 0
        default: return 4
        }
    }
}

/// A session's neighbours in the least-recently-seen list (slot indices; -1 = none), kept
/// apart from the sessions' state so that moving a session to the tail touches 8 bytes of
/// each neighbour, not its whole state.
struct LRULink {
    var prev: Int32 = -1
    var next: Int32 = -1
}

/// An open `buffer_drop` episode.
struct DropEpisode {
    var startedAt: Int64
    var startPosition: Int64
    /// The stream position of the request whose buffer the drop is measured from: a replay
    /// from there finds the drop again (one from `startPosition` would not see its reference).
    var referencePosition: Int64
    var referenceMs: Int64
    var objectClass: UInt8
    var severity: Severity
    var dropPercent: Double
    var lowestMs: Int64
}

/// An open `buffer_starvation` episode.
struct StarvationEpisode {
    var startedAt: Int64
    var startPosition: Int64
    var severity: Severity
    var trigger: String
    var lowestMs: Int64?
    /// When the episode became a stall (critical), for the session's rebuffer time.
    var stalledAt: Int64?
}

/// An immutable value behind a reference.
final class Boxed<Value: Sendable>: Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// Where a session is in its startup.
enum StartupPhase: UInt8 {
    /// The session began with a startup request; playback has not started.
    case starting
    /// Playback started (or startup could not be measured): the detector is done.
    case done
}

/// Everything the detectors remember about one live session. Kept small: the target is
/// under 1 KiB per live session including the table's own overhead.
struct SessionState {
    // What every request reads, together at the front (a few cache lines, fetched at once
    // when the session's state is not cached), then the buffer window, then the rest.

    /// The id as the index compares it.
    var key: SessionKey
    var newestTime: Int64
    var contentID: String?
    var edgeLocation: String?
    /// Open episodes, held apart: they are rare, and inline they would add two cache lines
    /// to what every request reads. Set as a whole (a new box each time), never shared.
    private var openDrop: Boxed<DropEpisode>?
    private var openStarvation: Boxed<StarvationEpisode>?
    /// Highest `bsa` seen; -1 when never seen.
    var starvationCountSeen: Int64 = -1
    /// The cohort window this session was last counted in, and what was counted of it there.
    var cohortWindow: Int32 = -1
    var cohortFlags: UInt8 = 0
    /// What the player is doing (`PlayerPhase`).
    var phase: PlayerPhase = .starting
    var startup: StartupPhase
    /// A `stuck` startup finding is open.
    var startupStuckFired = false
    /// Playback start was observed (not merely assumed).
    var playbackStarted = false
    /// The session has requested video (or muxed) segments: its audio requests then say
    /// nothing about playback starting or resuming (dash.js clears `su` per media type).
    var sawVideo = false
    var qoe = SessionQoE()
    var window = BufferWindow()

    var drop: DropEpisode? {
        get { openDrop?.value }
        set { openDrop = newValue.map(Boxed.init) }
    }
    var starvation: StarvationEpisode? {
        get { openStarvation?.value }
        set { openStarvation = newValue.map(Boxed.init) }
    }

    // Read when a session starts, ends or reports, or when the player's state changes.
    var sessionID: String
    var firstTime: Int64
    /// Stream position of the session's first record.
    var firstPosition: Int64 = 0
    /// Bumped whenever the slot is reused, so stale timers are recognised.
    var generation: UInt32 = 0
    /// Since when the player has been seeking, and whether that fired as stuck.
    var seekStuckFired = false
    var seekStartedAt: Int64 = 0
    /// A live session's usual buffer (moving average, ms); -1 until seen.
    var steadyBufferMs: Int32 = -1
    /// When the newest startup (`su`) media request's response ended (request time plus
    /// `time-taken`): playback cannot have waited for a later one. 0 when unknown.
    var startupRequestsDoneAt: Int64 = 0
    /// Media (ms of `d`) the logged startup requests asked for, video (or muxed) and audio
    /// apart: a later buffer of the track larger than this proves requests are missing from
    /// the log (sampled away).
    var startupMediaMs: Int32 = 0
    var startupAudioMs: Int32 = 0

    init(sessionID: String, key: SessionKey, firstTime: Int64, startup: StartupPhase) {
        self.key = key
        self.sessionID = sessionID
        self.firstTime = firstTime
        self.newestTime = firstTime
        self.startup = startup
    }

    /// Inserts an observation in time order, dropping what can no longer matter.
    @inline(__always)
    mutating func remember(_ observation: BufferObservation, keepFrom oldest: Int64, capacity: Int) {
        window.insert(observation, keepFrom: oldest, capacity: capacity)
    }

    /// The oldest stream position the state of the session at `session` was built from:
    /// replaying from it rebuilds everything the detectors still need (nil: nothing). Runs
    /// for every live session at every commit, so it reads the fields it needs in place: a
    /// getter called through the pointer copied the whole state (and retained what it holds)
    /// for each session.
    static func neededPosition(at session: UnsafePointer<SessionState>) -> Int64? {
        var needed: Int64?
        func consider(_ p: Int64) { needed = min(needed ?? p, p) }
        if session.pointee.startup == .starting { consider(session.pointee.firstPosition) }
        let window = UnsafeRawPointer(session) + MemoryLayout<SessionState>.offset(of: \.window)!
        if let lowest = BufferWindow.lowestPosition(at: window.assumingMemoryBound(to: BufferWindow.self)) { consider(lowest) }
        if let drop = session.pointee.openDrop { consider(min(drop.value.startPosition, drop.value.referencePosition)) }
        if let starvation = session.pointee.openStarvation { consider(starvation.value.startPosition) }
        return needed
    }

    /// When playback began, at the latest, given a request at `t` that shows it playing with
    /// `bufferMs` of buffer: no later than `t`; and when that buffer holds more media than the
    /// logged startup requests asked for, requests are missing from the log (CloudFront
    /// sampling), the first ones after playback began perhaps among them, so no later than
    /// the end of the last logged startup response. (A startup that is slow with every
    /// request logged, waiting on a licence, say, keeps its full length.)
    func startedNoLaterThan(_ t: Int64, bufferMs: Int64?, audio: Bool) -> Int64 {
        let requested = Int64(audio ? startupAudioMs : startupMediaMs)
        guard let bufferMs, requested > 0, bufferMs > requested + 1_000 else { return t }
        return startupRequestsDoneAt > firstTime && startupRequestsDoneAt < t ? startupRequestsDoneAt : t
    }

    /// The newest buffer observation of an object class.
    func lastObservation(objectClass: UInt8) -> BufferObservation? {
        window.last(where: { $0.objectClass == objectClass })
    }

    /// The highest buffer of the same object class in `[from, before)`, and the stream
    /// position of the newest request that reported it.
    @inline(__always)
    func reference(objectClass: UInt8, from: Int64, before: Int64) -> (ms: Int64, position: Int64)? {
        // Element by element, through the subscript: no copy of the window.
        var best: Int32 = -1
        var position: Int64 = 0
        for i in window.indices {
            let entry = window[i]
            if entry.objectClass == objectClass && entry.time >= from && entry.time < before && entry.bufferLength >= best {
                (best, position) = (entry.bufferLength, entry.position)
            }
        }
        return best >= 0 ? (Int64(best), position) : nil
    }
}
