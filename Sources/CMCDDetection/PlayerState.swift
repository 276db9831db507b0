import CMCD
import CMCDRecords
import SentinelJSON

/// What a session's player is doing, as far as its requests tell. v2 players say it (`sta`);
/// for v1 it is inferred: `su` after playback began is a seek (unless the player starved
/// while its buffer could have drained), a long silence with the buffer kept is a pause.
enum PlayerPhase: UInt8 {
    /// Startup has not finished (or the session was joined mid-stream and nothing is known yet).
    case starting
    case playing
    case seeking
    /// v2 `sta=r`.
    case rebuffering
    case paused
    /// v2 `sta=e`, `q` or `f`: the viewer is gone or playback failed.
    case ended
}

/// Per-session quality of experience in CTA-2066's vocabulary, computed as requests arrive
/// and carried on every `resolved` finding as `details.qoe`.
struct SessionQoE {
    /// First request to playback start (ms); -1 until known.
    var startupMs: Int32 = -1
    var seekCount: UInt16 = 0
    var rebufferCount: UInt16 = 0
    /// Sum over completed seeks of seek request to playback (ms).
    var seekLatencyMs: Int32 = 0
    var completedSeeks: UInt16 = 0
    /// Stall time: starvation episodes that were real stalls (not a low-buffer warning).
    var rebufferMs: Int32 = 0
    /// Time inferred or reported as paused (not watch time).
    var pausedMs: Int32 = 0

    static func clampedAdd(_ a: Int32, _ b: Int64) -> Int32 { Int32(clamping: Int64(a) + max(b, 0)) }

    /// The QoE as a finding detail. Watch time is the session's span less pauses; the
    /// rebuffer ratio is stall time over watch time (CTA-2066 "stalled time percentage" / 100).
    func jsonValue(firstTime: Int64, newestTime: Int64) -> JSONValue {
        let watch = max(newestTime - firstTime - Int64(pausedMs), 0)
        let ratio = watch > 0 ? (Double(rebufferMs) / Double(watch) * 10_000).rounded() / 10_000 : 0
        return .object([
            ("startup_ms", startupMs >= 0 ? .int(Int64(startupMs)) : .null),
            ("watch_ms", .int(watch)),
            ("seek_count", .int(Int64(seekCount))),
            ("seek_latency_ms", completedSeeks > 0 ? .int(Int64(seekLatencyMs) / Int64(completedSeeks)) : .null),
            ("rebuffer_count", .int(Int64(rebufferCount))),
            ("rebuffer_ms", .int(Int64(rebufferMs))),
            ("rebuffer_ratio", .double(min(ratio, 1))),
        ])
    }
}

/// What one request changed in the player's state, for the detectors that run after it.
struct PlayerTransition {
    /// The request belongs to a seek (the one that starts it or one made while seeking):
    /// it is not judged for drops or starvation.
    var inSeek = false
    /// The buffer history no longer describes the buffer now (a seek, a pause, an end).
    var resetWindow = false
    /// Why the window was reset, for a drop episode closed by it.
    var reason: PlayerEvent = .none
    /// The player is paused or gone: a low buffer means nothing.
    var idle = false
}

/// The player event that closed a drop episode.
enum PlayerEvent: String {
    case none
    case seek
    case pause
    case ended = "player_ended"
}

extension Detectors {
    /// Advances the session's player state from one request (run before the detectors).
    /// `gapMs` is the time since the session's previous newest request (0 for the first).
    @inline(__always)
    func observePlayer(
        _ sample: Sample, _ cmcd: CMCDSignals, gapMs: Int64, _ session: inout SessionState, into findings: inout [Finding]
    ) -> PlayerTransition {
        // The usual request: a v1 player playing on, nothing for the state to note.
        if cmcd.state == nil, !cmcd.startup, !cmcd.isLive, session.phase == .playing, gapMs < pauseGapMs,
            session.sawVideo || cmcd.objectType == .audio || !cmcd.isMediaRequest
        {
            return PlayerTransition()
        }
        return observePlayerChange(sample, cmcd, gapMs: gapMs, &session, into: &findings)
    }

    @inline(never)
    func observePlayerChange(
        _ sample: Sample, _ cmcd: CMCDSignals, gapMs: Int64, _ session: inout SessionState, into findings: inout [Finding]
    ) -> PlayerTransition {
        var transition = PlayerTransition()
        let t = sample.time
        if cmcd.objectType == .video || cmcd.objectType == .muxed { session.sawVideo = true }
        let audioBehindVideo = cmcd.objectType == .audio && session.sawVideo
        if session.phase == .starting, session.startup == .done, cmcd.isMediaRequest, !cmcd.startup || cmcd.state == .playing {
            session.phase = .playing  // a session whose start was not seen
        }
        if let state = cmcd.state {
            switch state {
            case .seeking:
                if session.phase != .seeking, session.phase != .starting { beginSeek(&session, at: t, &transition) }
                transition.inSeek = session.phase == .seeking
            case .playing:
                if session.phase == .seeking { endSeek(&session, at: t, into: &findings) }
                if session.phase == .paused {
                    transition.resetWindow = true
                    transition.reason = .pause
                }
                if session.phase != .starting { session.phase = .playing }
            case .rebuffering:
                if session.phase != .starting { session.phase = .rebuffering }
            case .paused:
                if session.phase != .paused, session.phase != .starting {
                    session.phase = .paused
                    transition.resetWindow = true
                    transition.reason = .pause
                }
                transition.idle = true
            case .ended, .quit, .fatalError:
                if session.phase != .ended {
                    session.phase = .ended
                    transition.resetWindow = true
                    transition.reason = .ended
                }
                transition.idle = true
            case .starting, .preloading, .waiting:
                break
            }
        } else if session.phase != .starting, cmcd.isMediaRequest {
            if cmcd.startup {
                if session.phase == .seeking {
                    transition.inSeek = true
                } else if !Self.reportsStarvation(cmcd) || bufferVanished(sample, cmcd, session) {
                    // `su` after playback began: a seek, or recovery from a stall. A stall is
                    // preceded by starvation and by a buffer that drained in play; hls.js reports
                    // its seeks as `bs,su` (the media element's `waiting`), but then the buffer
                    // went faster than playback could have used it.
                    beginSeek(&session, at: t, &transition)
                    transition.inSeek = true
                }
            } else if session.phase == .seeking, !audioBehindVideo {
                endSeek(&session, at: t, into: &findings)
            } else if session.phase == .paused || session.phase == .rebuffering {
                session.phase = .playing
            }
        }
        if session.phase == .seeking, transition.inSeek, !session.seekStuckFired, t - session.seekStartedAt > slowSeek.criticalMs, slowSeek.enabled {
            fireStuckSeek(&session, at: t, into: &findings)
        }
        // A long silence after which the buffer is still there: the viewer paused (v1 has no
        // word for it). In play the buffer would have fallen by about the silence.
        if gapMs >= pauseGapMs, session.phase != .starting, !transition.inSeek, cmcd.state == nil, cmcd.isMediaRequest,
            bufferKept(sample, cmcd, gapMs: gapMs, session)
        {
            session.qoe.pausedMs = SessionQoE.clampedAdd(session.qoe.pausedMs, gapMs)
            transition.resetWindow = true
            if transition.reason == .none { transition.reason = .pause }
        } else if session.phase == .paused, gapMs > 0 {
            session.qoe.pausedMs = SessionQoE.clampedAdd(session.qoe.pausedMs, gapMs)
        }
        if let bl = cmcd.bufferLength, cmcd.isLive, session.phase == .playing, !transition.inSeek, bl > 0 {
            // The live buffer the player keeps in steady state (a slow moving average).
            let steady = session.steadyBufferMs
            session.steadyBufferMs = steady < 0 ? Int32(clamping: bl) : Int32(clamping: (Int64(steady) * 7 + min(bl, 600_000)) / 8)
        }
        return transition
    }

    /// Whether the request reports starvation itself (`bs`, `sta=r`).
    static func reportsStarvation(_ cmcd: CMCDSignals) -> Bool {
        cmcd.bufferStarvation || cmcd.state == .rebuffering
    }

    /// Whether the same track's buffer fell by more than playback could have used since its
    /// last report: the player discarded it (a seek), it did not drain.
    func bufferVanished(_ sample: Sample, _ cmcd: CMCDSignals, _ session: SessionState) -> Bool {
        guard let bl = cmcd.bufferLength, let last = session.lastObservation(objectClass: ObjectClass.of(cmcd.objectType)) else { return false }
        let rate = max(cmcd.playbackRate ?? 1, 1)
        let drained = Double(max(sample.time - last.time, 0)) * rate
        return Double(Int64(last.bufferLength) - bl) > drained + Double(Self.drainSlackMs)
    }

    /// Whether the buffer after a silence of `gapMs` is about what it was before it.
    func bufferKept(_ sample: Sample, _ cmcd: CMCDSignals, gapMs: Int64, _ session: SessionState) -> Bool {
        guard let bl = cmcd.bufferLength else { return false }
        guard let last = session.lastObservation(objectClass: ObjectClass.of(cmcd.objectType)) else { return false }
        return bl >= Int64(last.bufferLength) - gapMs / 2
    }

    /// Timing and network jitter allowed when comparing a buffer's fall with elapsed time.
    static let drainSlackMs: Int64 = 2_000

    func beginSeek(_ session: inout SessionState, at t: Int64, _ transition: inout PlayerTransition) {
        session.phase = .seeking
        session.seekStartedAt = t
        session.seekStuckFired = false
        session.qoe.seekCount &+= 1
        transition.resetWindow = true
        transition.reason = .seek
    }

    /// Playback resumed after a seek: its latency is recorded, and a slow one reported.
    func endSeek(_ session: inout SessionState, at t: Int64, into findings: inout [Finding]) {
        session.phase = .playing
        let latency = max(t - session.seekStartedAt, 0)
        session.qoe.seekLatencyMs = SessionQoE.clampedAdd(session.qoe.seekLatencyMs, latency)
        session.qoe.completedSeeks &+= 1
        guard slowSeek.enabled, latency > slowSeek.warningMs || session.seekStuckFired else { return }
        reportSlowSeek(latency, &session, at: t, into: &findings)
    }

    @inline(never)
    func reportSlowSeek(_ latency: Int64, _ session: inout SessionState, at t: Int64, into findings: inout [Finding]) {
        reportWait(
            .slowSeek, waited: ("seek_latency_ms", latency), extra: [], thresholds: (slowSeek.warningMs, slowSeek.criticalMs),
            stuck: \.seekStuckFired, startedAt: session.seekStartedAt, firing: "Slow seek: playback resumed \(seconds: latency) after the seek",
            resolved: "Playback resumed \(seconds: latency) after the seek", &session, at: t, into: &findings)
    }

    @inline(never)
    func fireStuckSeek(_ session: inout SessionState, at t: Int64, into findings: inout [Finding]) {
        fireStuckWait(
            .slowSeek, waitKey: "seek_latency_ms", stuck: \.seekStuckFired, startedAt: session.seekStartedAt, threshold: slowSeek.criticalMs,
            summary: "Seek stuck: no playback \(seconds: t - session.seekStartedAt) after the seek", &session, at: t, into: &findings)
    }
}
