import SentinelJSON
import Testing

@testable import CMCDDetection

struct StarvationTests {
    @Test(arguments: [("bs", "bs"), ("sta=r,v=2", "sta=r"), ("bsd=(1500),v=2", "bsd")])
    func playerStarvationSignalsAreCritical(flag: String, trigger: String) {
        let samples = playing("s", buffers: [8000]) + [sample("s", at: t0 + 5000, "ot=av,bl=3000,\(flag)")]
        let starvation = run(samples).findings.of(.bufferStarvation)
        #expect(starvation.summary == ["buffer_starvation firing critical"])
        #expect(starvation.first?.detail("trigger") == .string(trigger))
    }

    @Test func risingStarvationCountFires() {
        let samples = [
            sample("s", at: t0, "ot=m,su,bsa=(0),v=2"), sample("s", at: t0 + 800, "ot=v,bl=(4000),bsa=(0),v=2"),
            sample("s", at: t0 + 3000, "ot=v,bl=(3000),bsa=(1),v=2"),
        ]
        #expect(run(samples).findings.of(.bufferStarvation).first?.detail("trigger") == .string("bsa"))
    }

    @Test func firstStarvationCountOfAJoinedSessionIsOnlyABaseline() {
        let samples = [sample("s", at: t0, "ot=v,bl=(9000),bsa=(4),v=2"), sample("s", at: t0 + 2000, "ot=v,bl=(9000),bsa=(4),v=2")]
        #expect(run(samples).findings.of(.bufferStarvation).isEmpty)
    }

    @Test func lowBufferWarnsAndEmptyBufferIsCritical() {
        #expect(run(playing("s", buffers: [3000, 400])).findings.of(.bufferStarvation).summary == ["buffer_starvation firing warning"])
        #expect(run(playing("s", buffers: [3000, 0])).findings.of(.bufferStarvation).summary == ["buffer_starvation firing critical"])
        #expect(run(playing("s", buffers: [3000, 500])).findings.of(.bufferStarvation).isEmpty, "500 ms is not below 500 ms")
    }

    @Test func noLowBufferFindingDuringStartupOrSeek() {
        let startup = [sample("s", at: t0, "ot=m,su"), sample("s", at: t0 + 300, "ot=av,bl=0,su"), sample("s", at: t0 + 900, "ot=av,bl=200,su")]
        #expect(run(startup).findings.of(.bufferStarvation).isEmpty)
        let seek = playing("s", buffers: [9000]) + [sample("s", at: t0 + 4000, "ot=v,bl=(0),sta=k,v=2")]
        #expect(run(seek).findings.of(.bufferStarvation).isEmpty)
    }

    @Test func resolvesOnlyAboveTheRecoveryLevelWithoutFlags() {
        let samples = playing("s", buffers: [8000]) + [
            sample("s", at: t0 + 4000, "ot=av,bl=0,bs"),
            sample("s", at: t0 + 5000, "ot=av,bl=2000"),  // not above 2000
            sample("s", at: t0 + 6000, "ot=av,bl=5000,bs"),  // still flagged
            sample("s", at: t0 + 7500, "ot=av,bl=2100"),
        ]
        let starvation = run(samples).findings.of(.bufferStarvation)
        #expect(starvation.summary == ["buffer_starvation firing critical", "buffer_starvation resolved critical"])
        #expect(starvation[1].detail("duration_ms") == .int(3500))
        #expect(starvation[1].detectedAt == t0 + 7500)
        #expect(starvation[1].detail("lowest_bl_ms") == .int(0))
    }

    @Test func lowBufferEscalatesWhenThePlayerStalls() {
        let samples = playing("s", buffers: [3000, 300]) + [sample("s", at: t0 + 6000, "ot=av,bl=0,bs,su")]
        let starvation = run(samples).findings.of(.bufferStarvation)
        #expect(starvation.summary == ["buffer_starvation firing warning", "buffer_starvation firing critical"])
        #expect(starvation[0].id == starvation[1].id)
        // Both carry what set them off; the second says it is an escalation.
        #expect(starvation[0].details.map(\.key) == ["trigger", "bl_ms", "threshold_ms"])
        #expect(starvation[0].detail("trigger") == .string("low_buffer") && starvation[0].detail("bl_ms") == .int(300))
        #expect(starvation[1].details.map(\.key) == ["trigger", "bl_ms", "threshold_ms", "escalated"])
        #expect(starvation[1].detail("trigger") == .string("bs") && starvation[1].detail("bl_ms") == .int(0))
        #expect(starvation[1].detail("threshold_ms") == .int(500) && starvation[1].detail("escalated") == .bool(true))
    }
}
