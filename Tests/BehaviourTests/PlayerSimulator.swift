import Foundation
import SentinelTestSupport

/// A small, deterministic model of a streaming player on a network, emitting CMCD the way
/// real players do, with the truth about what happened to the viewer.
///
/// The player logic is a buffer model stepped every 100 ms: each track requests its next
/// segment while its buffer is below target, downloads take segment size over throughput,
/// playback drains the buffer at the playback rate, an empty buffer while playing is a
/// stall. Viewer actions (seek, pause, quit) and network trouble are scripted per behaviour.
/// What each player puts in its CMCD follows its source:
/// - hls.js (`cmcd-controller.ts`): keys sorted, `su` while buffering (from the media
///   element's `waiting` until `playing`, so also after a seek), `bs,su` on the next video
///   request after a `waiting` once playback began (seeks included), `bl`/`mtp` rounded to
///   100, `pr` only when not 1, `ot=v` with separate audio (else `av`), manifests `su` only
///   before the first `playing`.
/// - dash.js (`CmcdModel`): `su` per media type until its first segment after start or seek,
///   `bs` once after the buffer ran empty, `mtp` floored to 100, `pr` as JavaScript prints
///   the catch-up rate (`pr=1.0500013331200346`).
/// - shaka-player: v2 request mode with `sta` (s, p, k, r, a, e), `bl` as an inner list,
///   `bs` once after it buffered.
/// - Media3 (`CmcdData`): headers, `bl=0` with `su` while a track's buffer is empty,
///   `bs` in CMCD-Status once after a rebuffer, `pr=1.25` style decimals, UTF-8 content ids.
struct PlayerSimulator {
    enum Player: String, CaseIterable, Sendable { case hlsjs, dashjs, shaka, media3 }

    /// How the CMCD reaches the detectors.
    enum Carrier: String, CaseIterable, Sendable {
        /// CloudFront real-time log, `CMCD=` query argument.
        case query
        /// CloudFront real-time log, `CMCD-*` request headers (in `cs-headers`).
        case headers
        /// CloudFront's native `cmcd-*` fields (v1 keys only: no `sta`).
        case native
        /// v2 event-mode reports (`e=rr` per response, `e=ps` on state changes), as `collect` produces.
        case event
    }

    enum Behaviour: String, CaseIterable, Sendable {
        // Ordinary viewing: nothing to report.
        case steady, seek, pause, qualitySwitch = "quality_switch", lowLatency = "low_latency", demuxed, sampled
        // Problems a video operations engineer wants to hear about.
        case stall, throughputDip = "throughput_dip", slowStartup = "slow_startup", stuckStartup = "stuck_startup", slowSeek = "slow_seek"

        var isOrdinary: Bool { [.steady, .seek, .pause, .qualitySwitch, .lowLatency, .demuxed, .sampled].contains(self) }
    }

    /// One request as the CDN logged it, with the truth about the player at that moment.
    struct Request {
        var timeMs: Int64
        var sessionID: String
        /// CMCD members in the player's order, values already in CMCD syntax.
        var members: [(key: String, value: String?)]
        var phase: Phase
        var objectType: String
        var trueBufferMs: Double
        /// How long the response took (CloudFront's `time-taken`), seconds.
        var timeTaken: Double = 0.05
    }

    enum Phase { case starting, playing, seeking, stalled, paused, ended }

    /// The truth for one session: finding type -> the severity an engineer expects.
    struct Truth {
        var expected: [String: String] = [:]
        mutating func expect(_ type: String, _ severity: String) {
            if expected[type] != "critical" { expected[type] = severity }
        }
    }

    struct Session {
        var id: String
        var player: Player
        var carrier: Carrier
        var behaviour: Behaviour
        var requests: [Request] = []
        /// When the player's state changed (for v2 event reports), in ms.
        var stateChanges: [(timeMs: Int64, phase: Phase)] = []
        var truth = Truth()
    }

    /// A fixed-seed generator (SplitMix64): the same suite every run.
    struct Random {
        var generator: SplitMix64
        init(state: UInt64) { generator = SplitMix64(seed: state) }
        mutating func next() -> UInt64 { generator.next() }
        mutating func uniform(_ range: ClosedRange<Double>) -> Double {
            range.lowerBound + Double(next() >> 11) / Double(1 << 53) * (range.upperBound - range.lowerBound)
        }
        mutating func chance(_ p: Double) -> Bool { uniform(0...1) < p }
    }

    struct Track {
        var type: String  // "v", "a" or "av"
        var bufferS: Double = 0
        var downloadingUntil: Double?
        var downloadStarted: Double = 0
        var downloadBitrate: Double = 0
        var pendingDuration: Double = 0
        /// dash.js: `su` until the first segment after start or seek.
        var dashStartup = true
        /// dash.js / Media3: starvation to report on the next request.
        var starvedToReport = false
    }

    static let ladder: [Double] = [800, 1600, 3000, 6000]

    /// Simulates one session starting at `startMs`.
    static func simulate(
        id: String, player: Player, carrier: Carrier, behaviour: Behaviour, startMs: Int64, random: inout Random
    ) -> Session {
        var session = Session(id: id, player: player, carrier: carrier, behaviour: behaviour)
        let live = behaviour == .lowLatency
        let demuxed = behaviour == .demuxed || player == .dashjs || (player == .hlsjs && random.chance(0.5))
        let segment = live ? 0.5 : (player == .hlsjs ? 4.0 : 2.0)
        let target = live ? 1.6 : 30.0
        let startAt = live ? 0.5 : segment
        let resumeAt = live ? 0.5 : 2.0
        let rtt = random.uniform(0.03...0.08)
        var throughput = ladder[2] * random.uniform(3...6)  // kbps
        // Players start from a default estimate (hls.js `abrEwmaDefaultEstimate`: 500 kbps), so
        // the first segments come from the bottom of the ladder and startup is quick.
        var estimate = 500.0
        var tracks = demuxed ? [Track(type: "v"), Track(type: "a")] : [Track(type: "av")]
        var phase = Phase.starting
        var rate = 1.0
        let cid = player == .media3 ? "S\u{e9}rie \u{e9}pisode \(id.suffix(2))" : "content-\(id.suffix(3))"
        var t = 0.0
        let duration = live ? 40.0 : 70.0
        var firstRequest: Double?
        var seekAt: Double?
        var seekStarted: Double?
        var pauseWindow: ClosedRange<Double>?
        var dip: ClosedRange<Double>?
        var startupExtra = 0.0
        var seekExtra = 0.0
        var stuck = false
        var hlsWaiting = false  // hls.js: `waiting` seen, `bs` not yet reported
        var hlsBuffering = true
        var initialized = false
        var stalled = false
        var lastManifest = -10.0
        var quitAt: Double?

        switch behaviour {
        case .seek: seekAt = random.uniform(20...35)
        case .slowSeek:
            seekAt = random.uniform(20...30)
            seekExtra = random.chance(0.5) ? random.uniform(3.2...4.2) : random.uniform(6.5...8)
        case .pause: pauseWindow = random.uniform(20...25)...random.uniform(50...60)
        case .stall:
            dip = random.uniform(15...20)...random.uniform(58...60)
        case .throughputDip:
            let from = random.uniform(25...30)
            dip = from...(from + random.uniform(14...16))
        case .slowStartup: startupExtra = random.chance(0.5) ? random.uniform(2.6...3.6) : random.uniform(5.8...7.5)
        case .stuckStartup:
            stuck = true
            quitAt = random.uniform(18...25)
        default: break
        }
        if behaviour == .stall || behaviour == .throughputDip {
            // A shorter target, as many players use on mobile, so the trouble shows in time.
            tracks = tracks.map { var t = $0; t.bufferS = 0; return t }
        }
        let stallTarget = behaviour == .stall || behaviour == .throughputDip ? 14.0 : target
        var truth = Truth()
        var seekLatency: Double?
        var startupTime: Double?
        var minPlayingBuffer = Double.infinity

        func bitrate(for track: Track) -> Double {
            if track.type == "a" { return 128 }
            let usable = estimate * 0.7
            return ladder.last(where: { $0 <= usable }) ?? ladder[0]
        }

        func emit(_ track: Track, objectType: String, at time: Double, br: Double?, d: Double?) {
            var m: [(String, String?)] = []
            let bufferMs = track.bufferS * 1000
            let isMedia = objectType == "v" || objectType == "a" || objectType == "av"
            let rounded = Int((bufferMs / 100).rounded()) * 100
            switch player {
            case .hlsjs:
                var su = hlsBuffering
                var bs = false
                if objectType == "m" { su = !initialized }
                if hlsWaiting, initialized, objectType == "v" || objectType == "av" {
                    bs = true
                    su = true
                    hlsWaiting = false
                }
                if isMedia, let br { m.append(("br", "\(Int(br.rounded()))")) }
                if isMedia { m.append(("bl", "\(rounded)")) }
                if bs { m.append(("bs", nil)) }
                m.append(("cid", "\"\(cid)\""))
                if let d { m.append(("d", "\(Int((d * 1000).rounded()))")) }
                m.append(("mtp", "\(Int((estimate / 100).rounded()) * 100)"))
                m.append(("ot", objectType))
                if rate != 1 { m.append(("pr", "\(rate)")) }
                m.append(("sf", "h"))
                m.append(("sid", "\"\(id)\""))
                if live { m.append(("st", "l")) }
                if su { m.append(("su", nil)) }
                if isMedia { m.append(("tb", "\(Int(ladder.last!))")) }
            case .dashjs, .media3:
                if isMedia { m.append(("bl", "\(rounded)")) }
                if isMedia, let br { m.append(("br", "\(Int(br.rounded()))")) }
                if track.starvedToReport, isMedia { m.append(("bs", nil)) }
                m.append(("cid", "\"\(cid)\""))
                if let d { m.append(("d", "\(Int((d * 1000).rounded()))")) }
                m.append(("mtp", "\(Int(estimate / 100) * 100)"))
                m.append(("ot", objectType))
                if rate != 1 {
                    // dash.js prints the rate as JavaScript does; Media3 as a float with 2 places.
                    m.append(("pr", player == .dashjs ? "\(rate + 0.0000013331200346)" : String(format: "%.2f", rate)))
                }
                m.append(("sf", player == .dashjs ? "d" : "h"))
                m.append(("sid", "\"\(id)\""))
                m.append(("st", live ? "l" : "v"))
                let su = player == .dashjs ? (isMedia ? track.dashStartup : phase == .starting) : (isMedia ? track.bufferS < 0.05 : phase == .starting)
                if su { m.append(("su", nil)) }
                if player == .dashjs, behaviour == .qualitySwitch, isMedia { m.append(("com.example-ver", "1.2.3")) }  // a malformed custom key
            case .shaka:
                let sta: String
                switch phase {
                case .starting: sta = "s"
                case .playing: sta = "p"
                case .seeking: sta = "k"
                case .stalled: sta = "r"
                case .paused: sta = "a"
                case .ended: sta = "e"
                }
                if isMedia { m.append(("bl", "(\(rounded))")) }
                if isMedia, let br { m.append(("br", "(\(Int(br.rounded())))")) }
                if track.starvedToReport, isMedia { m.append(("bs", nil)) }  // cmcd_manager: starved since the last report
                m.append(("cid", "\"\(cid)\""))
                if let d { m.append(("d", "\(Int((d * 1000).rounded()))")) }
                m.append(("mtp", "(\(Int((estimate / 100).rounded()) * 100))"))
                m.append(("ot", objectType))
                m.append(("sf", "d"))
                m.append(("sid", "\"\(id)\""))
                m.append(("st", live ? "ll" : "v"))
                m.append(("sta", sta))
                if phase == .starting || phase == .seeking || phase == .stalled { m.append(("su", nil)) }
                m.append(("v", "2"))
            }
            session.requests.append(
                Request(
                    timeMs: startMs + Int64((time * 1000).rounded()), sessionID: id, members: m, phase: phase, objectType: objectType,
                    trueBufferMs: bufferMs))
            if isMedia, phase == .playing { minPlayingBuffer = min(minPlayingBuffer, track.bufferS) }
        }

        // The manifest.
        firstRequest = 0
        emit(tracks[0], objectType: "m", at: 0, br: nil, d: nil)
        t = 0.15
        let step = 0.1
        var reported = phase
        session.stateChanges.append((startMs, phase))
        defer {
            if phase != reported { session.stateChanges.append((startMs + Int64((t * 1000).rounded()), phase)) }
        }
        while t < duration {
            if phase != reported {
                session.stateChanges.append((startMs + Int64((t * 1000).rounded()), phase))
                reported = phase
            }
            if let quitAt, t >= quitAt { phase = .ended; break }
            // Viewer actions.
            if let s = seekAt, t >= s, seekStarted == nil, phase == .playing {
                seekStarted = t
                phase = .seeking
                for k in tracks.indices {
                    tracks[k].bufferS = 0
                    tracks[k].downloadingUntil = nil
                    tracks[k].dashStartup = true
                }
                hlsBuffering = true
                hlsWaiting = true
            }
            if let p = pauseWindow {
                if p.contains(t), phase == .playing { phase = .paused }
                if t > p.upperBound, phase == .paused { phase = .playing }
            }
            if let dip { throughput = dip.contains(t) ? (behaviour == .stall ? 300 : 1400) : ladder[2] * 4 }
            if live, phase == .playing {
                // Low-latency catch-up: speed up above target, slow down when short.
                let b = tracks.map(\.bufferS).min() ?? 0
                rate = b > 1.9 ? 1.05 : (b < 1.1 ? 0.95 : 1)
            }
            // Live manifest refreshes.
            if live, t - lastManifest >= 2 {
                lastManifest = t
                emit(tracks[0], objectType: "m", at: t, br: nil, d: nil)
            }
            // Downloads.
            for k in tracks.indices {
                if let until = tracks[k].downloadingUntil, t < until, t - tracks[k].downloadStarted >= 1,
                    throughput < tracks[k].downloadBitrate, until - t > tracks[k].bufferS + 1, tracks[k].downloadBitrate > ladder[0],
                    tracks[k].type != "a"
                {
                    // A load slower than real time that would outlast the buffer: abandon it and
                    // switch down, as hls.js's and dash.js's abandonment rules do.
                    tracks[k].downloadingUntil = nil
                    estimate = throughput
                }
                if let until = tracks[k].downloadingUntil {
                    if t >= until {
                        tracks[k].downloadingUntil = nil
                        tracks[k].bufferS += tracks[k].pendingDuration
                        tracks[k].dashStartup = false
                    }
                    continue
                }
                let full = tracks[k].bufferS >= (phase == .paused ? target : stallTarget)
                if full { continue }
                if stuck {
                    // Every segment request fails; the player retries each second.
                    if (t * 10).rounded().truncatingRemainder(dividingBy: 10) == 0 {
                        emit(tracks[k], objectType: tracks[k].type, at: t, br: bitrate(for: tracks[k]), d: segment)
                    }
                    continue
                }
                let br = bitrate(for: tracks[k])
                emit(tracks[k], objectType: tracks[k].type, at: t, br: br, d: segment)
                if tracks[k].starvedToReport { tracks[k].starvedToReport = false }
                var time = segment * br / throughput + rtt
                if phase == .starting, startupExtra > 0 { time += startupExtra; startupExtra = 0 }
                if phase == .seeking, seekExtra > 0 { time += seekExtra; seekExtra = 0 }
                tracks[k].downloadingUntil = t + time
                session.requests[session.requests.count - 1].timeTaken = time
                tracks[k].downloadStarted = t
                tracks[k].downloadBitrate = br
                tracks[k].pendingDuration = segment
                estimate = estimate * 0.7 + min(segment * br / max(time - rtt, 0.001), throughput) * 0.3
            }
            // Playback.
            let buffer = tracks.map(\.bufferS).min() ?? 0
            switch phase {
            case .starting:
                if buffer >= startAt {
                    phase = .playing
                    startupTime = t - (firstRequest ?? 0)
                    initialized = true
                    hlsBuffering = false
                }
            case .seeking:
                if buffer >= resumeAt {
                    phase = .playing
                    seekLatency = max(seekLatency ?? 0, t - (seekStarted ?? t))
                    hlsBuffering = false
                    hlsWaiting = false
                }
            case .stalled:
                if buffer >= resumeAt {
                    phase = .playing
                    hlsBuffering = false
                }
            case .playing:
                for k in tracks.indices { tracks[k].bufferS = max(tracks[k].bufferS - step * rate, 0) }
                if (tracks.map(\.bufferS).min() ?? 0) <= 0 {
                    phase = .stalled
                    stalled = true
                    hlsWaiting = true
                    hlsBuffering = true
                    for k in tracks.indices { tracks[k].starvedToReport = true }
                }
            case .paused, .ended:
                break
            }
            t += step
        }

        // The truth, from the player's own timeline.
        if let startupTime {
            if startupTime > 5 { truth.expect("startup_delay", "critical") } else if startupTime > 2 { truth.expect("startup_delay", "warning") }
        } else {
            truth.expect("startup_delay", "critical")  // never started: stuck
        }
        if let seekLatency {
            if seekLatency > 5 { truth.expect("slow_seek", "critical") } else if seekLatency > 2 { truth.expect("slow_seek", "warning") }
        }
        if stalled { truth.expect("buffer_starvation", "critical") } else if !live, minPlayingBuffer < 0.45 { truth.expect("buffer_starvation", "warning") }
        session.truth = truth
        return session
    }
}
