/// A detection engine's state as bytes, so that a restarted daemon resumes each partition
/// where its last checkpoint left it instead of re-reading minutes of the stream.
///
/// Versioned and compact: a magic, a version, the event-time clock, then every live session,
/// least recently seen first, with times and positions as zigzag varints relative to the
/// session's first record. Session keys are not stored (their hash is keyed per process);
/// restoring re-indexes each id. Statistics are not kept (they count what this process did).
public enum EngineCheckpoint {
    static let magic: [UInt8] = Array("CSCK".utf8)
    /// Bumped whenever the layout changes; a newer checkpoint is refused, and so is an older
    /// one this build cannot read (version 1 lacks a drop's reference position: its drops are
    /// restored with their first request's).
    public static let version: UInt8 = 2
    static let readable: ClosedRange<UInt8> = 1...2

    /// Why a checkpoint cannot be restored.
    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public var description: String
    }
}

extension DetectionEngine {
    /// This engine's state as a checkpoint.
    public func checkpoint() -> [UInt8] {
        var w = CheckpointWriter()
        w.bytes += EngineCheckpoint.magic
        w.byte(EngineCheckpoint.version)
        w.int(clock.watermark)
        w.int(clock.nextHousekeeping)
        w.int(Int64(liveSessionCount))
        forEachSessionInRecencyOrder { w.session($0) }
        return w.bytes
    }

    /// An engine with `rules` and the state of `checkpoint`.
    public init(rules: DetectionRules = DetectionRules(), checkpoint bytes: [UInt8]) throws(EngineCheckpoint.Invalid) {
        self.init(rules: rules)
        var r = CheckpointReader(bytes: bytes)
        guard bytes.count >= 5, Array(bytes[0..<4]) == EngineCheckpoint.magic else { throw r.invalid("not a detection checkpoint") }
        r.offset = 4
        let version = try r.byte()
        guard EngineCheckpoint.readable.contains(version) else {
            throw r.invalid("checkpoint version \(version), this build reads \(EngineCheckpoint.readable)")
        }
        r.version = version
        let watermark = try r.int()
        let nextHousekeeping = try r.int()
        restoreClock(watermark: watermark, nextHousekeeping: nextHousekeeping)
        let count = try r.int()
        guard count >= 0, count <= Int64(bytes.count) else { throw r.invalid("session count \(count)") }
        for _ in 0..<count {
            guard restoreSession(try r.session()) else { throw r.invalid("a session appears twice") }
        }
        guard r.offset == bytes.count else { throw r.invalid("\(bytes.count - r.offset) bytes after the last session") }
    }
}

/// Appends the checkpoint's encoding.
struct CheckpointWriter {
    var bytes: [UInt8] = []

    mutating func byte(_ b: UInt8) { bytes.append(b) }
    mutating func bool(_ b: Bool) { bytes.append(b ? 1 : 0) }

    /// Zigzag varint.
    mutating func int(_ n: Int64) {
        var v = UInt64(bitPattern: (n << 1) ^ (n >> 63))
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        int(Int64(utf8.count))
        bytes += utf8
    }

    mutating func optionalString(_ s: String?) {
        bool(s != nil)
        if let s { string(s) }
    }

    mutating func optionalInt(_ n: Int64?) {
        bool(n != nil)
        if let n { int(n) }
    }

    mutating func session(_ s: SessionState) {
        string(s.sessionID)
        optionalString(s.contentID)
        optionalString(s.edgeLocation)
        let t0 = s.firstTime
        let p0 = s.firstPosition
        int(t0)
        int(s.newestTime &- t0)
        int(p0)
        byte(s.startup.rawValue)
        bool(s.startupStuckFired)
        bool(s.playbackStarted)
        int(s.starvationCountSeen)
        byte(s.phase.rawValue)
        bool(s.sawVideo)
        int(Int64(s.window.count))
        var (t, p) = (t0, p0)
        for o in s.window {
            int(o.time &- t)
            int(o.position &- p)
            (t, p) = (o.time, o.position)
            int(Int64(o.bufferLength))
            byte(o.objectClass)
        }
        bool(s.drop != nil)
        if let d = s.drop {
            int(d.startedAt &- t0)
            int(d.startPosition &- p0)
            int(d.referenceMs)
            byte(d.objectClass)
            bool(d.severity == .critical)
            int(Int64(bitPattern: d.dropPercent.bitPattern))
            int(d.lowestMs)
            int(d.referencePosition &- p0)
        }
        bool(s.starvation != nil)
        if let e = s.starvation {
            int(e.startedAt &- t0)
            int(e.startPosition &- p0)
            bool(e.severity == .critical)
            string(e.trigger)
            optionalInt(e.lowestMs)
            optionalInt(e.stalledAt.map { $0 &- t0 })
        }
        bool(s.seekStuckFired)
        int(s.seekStartedAt &- t0)
        int(Int64(s.steadyBufferMs))
        int(s.startupRequestsDoneAt)
        int(Int64(s.startupMediaMs))
        int(Int64(s.startupAudioMs))
        let q = s.qoe
        for n in [Int64(q.startupMs), Int64(q.seekCount), Int64(q.rebufferCount), Int64(q.seekLatencyMs), Int64(q.completedSeeks), Int64(q.rebufferMs), Int64(q.pausedMs)] {
            int(n)
        }
    }
}

/// Reads a checkpoint, every length and value checked: a damaged one is refused, never trusted.
struct CheckpointReader {
    let bytes: [UInt8]
    var offset = 0
    /// The checkpoint's layout version (see `EngineCheckpoint.version`).
    var version = EngineCheckpoint.version

    func invalid(_ why: String) -> EngineCheckpoint.Invalid { EngineCheckpoint.Invalid(description: "checkpoint at byte \(offset): \(why)") }

    mutating func byte() throws(EngineCheckpoint.Invalid) -> UInt8 {
        guard offset < bytes.count else { throw invalid("truncated") }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func bool() throws(EngineCheckpoint.Invalid) -> Bool {
        switch try byte() {
        case 0: return false
        case 1: return true
        default: throw invalid("not a boolean")
        }
    }

    mutating func int() throws(EngineCheckpoint.Invalid) -> Int64 {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try byte()
            guard shift < 64 else { throw invalid("varint too long") }
            v |= UInt64(b & 0x7F) << shift
            if b < 0x80 { break }
            shift += 7
        }
        return Int64(bitPattern: v >> 1) ^ -Int64(bitPattern: v & 1)
    }

    mutating func int32() throws(EngineCheckpoint.Invalid) -> Int32 {
        let n = try int()
        guard let v = Int32(exactly: n) else { throw invalid("\(n) out of range") }
        return v
    }

    mutating func uint16() throws(EngineCheckpoint.Invalid) -> UInt16 {
        let n = try int()
        guard let v = UInt16(exactly: n) else { throw invalid("\(n) out of range") }
        return v
    }

    mutating func string() throws(EngineCheckpoint.Invalid) -> String {
        let count = try int()
        guard count >= 0, count <= Int64(bytes.count - offset) else { throw invalid("string of \(count) bytes") }
        defer { offset += Int(count) }
        return String(decoding: bytes[offset..<(offset + Int(count))], as: UTF8.self)
    }

    mutating func optionalString() throws(EngineCheckpoint.Invalid) -> String? { try bool() ? try string() : nil }
    mutating func optionalInt() throws(EngineCheckpoint.Invalid) -> Int64? { try bool() ? try int() : nil }

    mutating func session() throws(EngineCheckpoint.Invalid) -> SessionState {
        let id = try string()
        guard !id.isEmpty else { throw invalid("a session without id") }
        let contentID = try optionalString()
        let edge = try optionalString()
        let t0 = try int()
        let newest = t0 &+ (try int())
        let p0 = try int()
        guard let startup = StartupPhase(rawValue: try byte()) else { throw invalid("startup phase") }
        var s = SessionState(sessionID: id, key: SessionKey(), firstTime: t0, startup: startup)
        s.contentID = contentID
        s.edgeLocation = edge
        s.newestTime = newest
        s.firstPosition = p0
        s.startupStuckFired = try bool()
        s.playbackStarted = try bool()
        s.starvationCountSeen = try int()
        guard let phase = PlayerPhase(rawValue: try byte()) else { throw invalid("player phase") }
        s.phase = phase
        s.sawVideo = try bool()
        let windowCount = try int()
        guard windowCount >= 0, windowCount <= Int64(DetectionEngine.windowCapacity) else { throw invalid("window of \(windowCount)") }
        var (t, p) = (t0, p0)
        for _ in 0..<windowCount {
            t = t &+ (try int())
            p = p &+ (try int())
            s.window.append(BufferObservation(time: t, position: p, bufferLength: try int32(), objectClass: try byte()))
        }
        if try bool() {
            let startedAt = t0 &+ (try int())
            let startPosition = p0 &+ (try int())
            let referenceMs = try int()
            let objectClass = try byte()
            let severity: Severity = try bool() ? .critical : .warning
            let percent = Double(bitPattern: UInt64(bitPattern: try int()))
            let lowestMs = try int()
            let referencePosition = version >= 2 ? p0 &+ (try int()) : startPosition
            s.drop = DropEpisode(
                startedAt: startedAt, startPosition: startPosition, referencePosition: referencePosition, referenceMs: referenceMs,
                objectClass: objectClass, severity: severity, dropPercent: percent, lowestMs: lowestMs)
        }
        if try bool() {
            let startedAt = t0 &+ (try int())
            let startPosition = p0 &+ (try int())
            let severity: Severity = try bool() ? .critical : .warning
            let trigger = try string()
            let lowest = try optionalInt()
            let stalledAt = try optionalInt().map { t0 &+ $0 }
            s.starvation = StarvationEpisode(
                startedAt: startedAt, startPosition: startPosition, severity: severity, trigger: trigger, lowestMs: lowest, stalledAt: stalledAt)
        }
        s.seekStuckFired = try bool()
        s.seekStartedAt = t0 &+ (try int())
        s.steadyBufferMs = try int32()
        s.startupRequestsDoneAt = try int()
        s.startupMediaMs = try int32()
        s.startupAudioMs = try int32()
        s.qoe.startupMs = try int32()
        s.qoe.seekCount = try uint16()
        s.qoe.rebufferCount = try uint16()
        s.qoe.seekLatencyMs = try int32()
        s.qoe.completedSeeks = try uint16()
        s.qoe.rebufferMs = try int32()
        s.qoe.pausedMs = try int32()
        return s
    }
}
