import CMCDRecords
import SentinelJSON
import Testing

@testable import CMCDDetection

/// The player-state model: viewer actions (seek, pause, end) are not problems; stalls,
/// drops while playing and slow seeks still are.
struct PlayerStateTests {
    /// A VOD viewer with 22 s of buffer seeks; the player flushes, the next request says `su`.
    @Test func aV1SeekIsNotABufferDrop() {
        let samples = playing("s", buffers: [8000, 14000, 22200]) + [
            sample("s", at: t0 + 7000, "ot=av,bl=0,su"),
            sample("s", at: t0 + 7600, "ot=av,bl=2000,su"),
            sample("s", at: t0 + 8200, "ot=av,bl=4000"),
            sample("s", at: t0 + 10_200, "ot=av,bl=6000"),
        ]
        let (findings, engine) = run(samples, finish: true)
        #expect(findings.isEmpty, "\(findings.summary)")
        #expect(engine.statistics.findings.isEmpty)
    }

    /// hls.js reports a seek as `bs,su` on the next video request (its media element fires
    /// `waiting`); the buffer went faster than playback could have used it.
    @Test func anHlsjsSeekWithStarvationFlagIsASeek() {
        let samples = playing("s", buffers: [8000, 14000, 22200]) + [
            sample("s", at: t0 + 6000, "ot=av,bl=0,bs,su"),
            sample("s", at: t0 + 7000, "ot=av,bl=4000"),
        ]
        #expect(run(samples, finish: true).findings.isEmpty)
    }

    /// A real stall: the buffer drains in play, then the player starves and recovers with `bs,su`.
    @Test func aStallAfterTheBufferDrainedStillFires() {
        let samples = playing("s", buffers: [9000, 7000, 5000, 3000, 1000]) + [
            sample("s", at: t0 + 11_000, "ot=av,bl=0,bs,su"),
            sample("s", at: t0 + 14_000, "ot=av,bl=4000"),
        ]
        let findings = run(samples, finish: true).findings
        #expect(findings.of(.bufferStarvation).map(\.status) == [.firing, .resolved])
        #expect(findings.of(.slowSeek).isEmpty)
        let qoe = findings.of(.bufferStarvation).last?.detail("qoe")
        #expect(qoe?["rebuffer_count"] == .int(1) && qoe?["rebuffer_ms"] == .int(3000) && qoe?["seek_count"] == .int(0))
    }

    @Test func aV2SeekIsNotJudgedAndItsLatencyIsMeasured() {
        let samples = [
            sample("s", at: t0, "ot=m,sta=s,v=2"),
            sample("s", at: t0 + 800, "ot=v,bl=(3000),sta=p,v=2"),
            sample("s", at: t0 + 4000, "ot=v,bl=(20000),sta=p,v=2"),
            sample("s", at: t0 + 5000, "ot=v,bl=(0),sta=k,v=2"),
            sample("s", at: t0 + 5500, "ot=v,bl=(0),sta=k,v=2"),
            sample("s", at: t0 + 6200, "ot=v,bl=(2000),sta=p,v=2"),
            sample("s", at: t0 + 20_000, "ot=v,bl=(2500),sta=p,v=2"),
        ]
        let (findings, _) = run(samples)
        #expect(findings.isEmpty, "\(findings.summary)")
        var engine = DetectionEngine()
        var out: [Finding] = []
        for s in samples { engine.process(s, into: &out) }
        // A drop while playing after the seek still fires.
        engine.process(sample("s", at: t0 + 22_000, "ot=v,bl=(200),sta=p,v=2"), into: &out)
        #expect(out.of(.bufferDrop).map(\.severity) == [.critical])
        engine.process(sample("s", at: t0 + 24_000, "ot=v,bl=(9000),sta=p,v=2"), into: &out)
        let qoe = out.of(.bufferDrop).last?.detail("qoe")
        #expect(qoe?["seek_count"] == .int(1) && qoe?["seek_latency_ms"] == .int(1200) && qoe?["startup_ms"] == .int(800))
    }

    @Test func aSlowSeekWarnsAndAStuckOneIsCritical() {
        var rules = DetectionRules()
        rules.slowSeek.warningMs = 2000
        rules.slowSeek.criticalMs = 5000
        let base = playing("s", buffers: [12000, 20000])
        let slow = run(base + [sample("s", at: t0 + 4000, "ot=av,bl=0,su"), sample("s", at: t0 + 7000, "ot=av,bl=3000")], rules: rules).findings
        #expect(slow.summary == ["slow_seek firing warning", "slow_seek resolved warning"])
        #expect(slow.first?.detail("seek_latency_ms") == .int(3000))
        let stuck = run(
            base + [
                sample("s", at: t0 + 4000, "ot=av,bl=0,su"), sample("s", at: t0 + 9500, "ot=av,bl=0,su"),
                sample("s", at: t0 + 12_000, "ot=av,bl=3000"),
            ], rules: rules
        ).findings
        #expect(stuck.summary == ["slow_seek firing critical", "slow_seek resolved critical"])
        #expect(Set(stuck.map(\.id)).count == 1, "one episode, one id")
    }

    /// A v1 pause: requests stop while the buffer stays; after it the buffer history restarts.
    @Test func aPauseIsNotAnAnomalyAndIsNotWatchTime() {
        let samples = playing("s", buffers: [20000, 24000, 30000]) + [
            // 60 s of silence, the buffer kept; then a small top-up rhythm resumes.
            sample("s", at: t0 + 65_000, "ot=av,bl=29000"),
            sample("s", at: t0 + 67_000, "ot=av,bl=30000"),
        ]
        let (findings, _) = run(samples, finish: true)
        #expect(findings.isEmpty)
        var rules = DetectionRules()
        rules.startupDelay.warningMs = 1  // a finding to carry the QoE
        let qoe = run(samples, rules: rules, finish: true).findings.last?.detail("qoe")
        guard case .int(let watch)? = qoe?["watch_ms"] else {
            Issue.record("no watch time in \(String(describing: qoe))")
            return
        }
        #expect(watch < 15_000, "the 60 s pause is not watch time")
    }

    @Test func v2PausedEndedAndQuitAreNotStalls() {
        let samples = [
            sample("s", at: t0, "ot=m,sta=s,v=2"),
            sample("s", at: t0 + 600, "ot=v,bl=(8000),sta=p,v=2"),
            sample("s", at: t0 + 2600, "ot=v,bl=(200),sta=a,v=2"),  // paused: the player dropped its forward buffer
            sample("s", at: t0 + 30_000, "ot=v,bl=(0),sta=a,v=2"),
            sample("s", at: t0 + 31_000, "ot=v,bl=(0),sta=e,v=2"),
        ]
        #expect(run(samples, finish: true).findings.isEmpty)
        // Quitting before playback is an exit before video start, not a stuck startup.
        let quit = [sample("q", at: t0, "ot=m,sta=s,v=2"), sample("q", at: t0 + 1500, "ot=v,sta=q,v=2"), sample("x", at: t0 + 60_000, "ot=m,su")]
        #expect(run(quit, finish: true).findings.of(.startupDelay).isEmpty)
    }

    /// `sta=r` is a stall; `sta=k` with an empty buffer is not.
    @Test func v2RebufferingCountsSeekingDoesNot() {
        let base = [sample("s", at: t0, "ot=m,sta=s,v=2"), sample("s", at: t0 + 600, "ot=v,bl=(4000),sta=p,v=2")]
        let stall = run(base + [sample("s", at: t0 + 5000, "ot=v,bl=(0),sta=r,v=2"), sample("s", at: t0 + 7000, "ot=v,bl=(5000),sta=p,v=2")]).findings
        #expect(stall.of(.bufferStarvation).first?.detail("trigger") == .string("sta=r"))
        let seek = run(base + [sample("s", at: t0 + 5000, "ot=v,bl=(0),sta=k,v=2"), sample("s", at: t0 + 6000, "ot=v,bl=(5000),sta=p,v=2")]).findings
        #expect(seek.isEmpty)
    }

    /// Demuxed tracks: audio runs ahead of video; each is compared with its own history.
    @Test func demuxedTracksAreJudgedPerTrack() {
        var samples = [sample("s", at: t0, "ot=m,su"), sample("s", at: t0 + 300, "ot=v,bl=0,su"), sample("s", at: t0 + 400, "ot=a,bl=0,su")]
        for i in 0..<8 {
            let t = t0 + 1000 + Int64(i) * 2000
            samples.append(sample("s", at: t, "ot=a,bl=\(24000 + i * 100)"))
            samples.append(sample("s", at: t + 50, "ot=v,bl=\(6000 + i * 100)"))
        }
        #expect(run(samples, finish: true).findings.isEmpty)
    }

    /// Low-latency live: a healthy buffer of about 1.5 s that dips as the player catches up.
    @Test func lowLatencySteadyStateIsNotLowOrADrop() {
        var rules = DetectionRules()
        rules.bufferStarvation.lowBufferMs = 1000  // an operator tuned for VOD
        var samples = [sample("s", at: t0, "ot=m,st=l,su"), sample("s", at: t0 + 400, "ot=v,bl=0,st=l,su")]
        let levels: [Int64] = [1500, 1400, 1600, 900, 700, 1500, 1800, 1300, 800, 1500]
        for (i, bl) in levels.enumerated() {
            samples.append(sample("s", at: t0 + 1000 + Int64(i) * 1000, "ot=v,bl=\(bl),pr=1.05,st=l"))
        }
        #expect(run(samples, rules: rules, finish: true).findings.isEmpty, "\(run(samples, rules: rules).findings.summary)")
        // Starving there still fires.
        samples.append(sample("s", at: t0 + 12_000, "ot=v,bl=0,st=l"))
        #expect(run(samples, rules: rules).findings.of(.bufferStarvation).map(\.severity) == [.critical])
    }

    @Test func rulesLoadTheNewKeys() throws {
        let rules = try DetectionRules.parse(
            yaml: """
                version: 1
                detectors:
                  slow_seek: {warning_ms: 1500, critical_ms: 4000}
                  buffer_drop: {live_min_reference_ms: 6000}
                  buffer_starvation: {live_low_buffer_ratio: 0.1}
                sessions: {pause_gap_ms: 20000}
                """, file: "r.yaml")
        #expect(rules.slowSeek.warningMs == 1500 && rules.slowSeek.criticalMs == 4000)
        #expect(rules.bufferDrop.liveMinReferenceMs == 6000 && rules.bufferStarvation.liveLowBufferRatio == 0.1)
        #expect(rules.sessions.pauseGapMs == 20000)
        #expect(throws: (any Error).self) {
            try DetectionRules.parse(yaml: "version: 1\ndetectors:\n  slow_seek: {warning_ms: 5000, critical_ms: 4000}\n", file: "r.yaml")
        }
    }
}

/// One record dated far ahead must not move event time for everyone else (issue 25).
struct FutureTimestampTests {
    /// Many sessions, one of which sends one record a day ahead in the middle of the stream.
    static func stream(poisoned: Bool) -> [Sample] {
        var samples: [Sample] = []
        for i in 0..<40 {
            let sid = "s\(i)"
            let start = t0 + Int64(i) * 500
            samples += playing(sid, start: start, buffers: i % 5 == 0 ? [20000, 20000, 2000, 9000] : [8000, 9000, 10000, 11000])
        }
        samples.sort { $0.time < $1.time }
        if poisoned { samples.insert(sample("s7", at: t0 + 86_400_000, "ot=av,bl=0,bs"), at: samples.count / 2) }
        // Later records of every session, a minute on: within the idle timeout.
        for i in 0..<40 { samples.append(sample("s\(i)", at: t0 + 80_000 + Int64(i) * 100, "ot=av,bl=12000")) }
        return samples
    }

    @Test func aFarFutureRecordChangesNoOtherFinding() {
        let clean = run(Self.stream(poisoned: false), finish: true)
        let poisoned = run(Self.stream(poisoned: true), finish: true)
        #expect(poisoned.findings.map(\.jsonValue) == clean.findings.map(\.jsonValue))
        #expect(poisoned.engine.statistics.futureTimestamps == 1)
        #expect(poisoned.engine.statistics.idleEvictions == clean.engine.statistics.idleEvictions)
        #expect(poisoned.engine.statistics.sessionsStarted == 40, "no session split in two")
        #expect(poisoned.engine.watermark == clean.engine.watermark)
    }

    @Test func aheadOfTheWallClockIsImplausibleEvenAsTheFirstRecord() {
        var engine = DetectionEngine()
        engine.noteWallClock(t0)
        var findings: [Finding] = []
        engine.process(sample("x", at: t0 + 86_400_000, "ot=m,su"), into: &findings)
        engine.process(sample("y", at: t0 + 1000, "ot=m,su"), into: &findings)
        #expect(engine.statistics.futureTimestamps == 1 && engine.watermark == t0 + 1000)
    }

    @Test func aStreamThatMovesOnIsFollowed() {
        // A replay of a later day: after a run of such records the engine follows them.
        var samples = playing("a", buffers: [8000, 9000])
        let later = t0 + 3 * 86_400_000
        for i in 0..<40 { samples.append(sample("b\(i)", at: later + Int64(i) * 100, "ot=m,su")) }
        let (_, engine) = run(samples)
        #expect(engine.statistics.futureTimestamps == DetectionEngine.futureRunToFollow - 1)
        #expect(engine.watermark >= later)
    }
}
