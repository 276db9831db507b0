import CMCDRecords
import SentinelJSON
import Testing

@testable import CMCDDetection

struct StartupTests {
    func startup(after ms: Int64) -> [Sample] {
        [sample("s", at: t0, "ot=m,su"), sample("s", at: t0 + 200, "ot=av,bl=0,su"), sample("s", at: t0 + ms, "ot=av,bl=4000")]
    }

    @Test(arguments: [(Int64(1500), nil as Severity?), (2000, nil), (2001, .warning), (5000, .warning), (5001, .critical)])
    func severityByStartupTime(ms: Int64, expected: Severity?) {
        let findings = run(startup(after: ms)).findings.of(.startupDelay)
        if let expected {
            #expect(findings.summary == ["startup_delay firing \(expected.rawValue)", "startup_delay resolved \(expected.rawValue)"])
            #expect(findings[0].detail("startup_ms") == .int(ms))
            #expect(findings[0].startedAt == t0)
        } else {
            #expect(findings.isEmpty)
        }
    }

    @Test func mediaStartDelayIsUsedWhenReported() {
        let samples = [sample("s", at: t0, "ot=m,su,v=2"), sample("s", at: t0 + 900, "ot=v,bl=(4000),msd=3100,sta=p,v=2")]
        let f = run(samples).findings.of(.startupDelay)
        #expect(f.first?.detail("startup_ms") == .int(3100))
        #expect(f.first?.detail("source") == .string("msd"))
    }

    @Test func stuckStartupFiresOnTheSampleThatProvesIt() {
        let samples = (0..<8).map { i in sample("s", at: t0 + Int64(i) * 1000, i == 0 ? "ot=m,su" : "ot=av,bl=0,su") }
        let f = run(samples).findings.of(.startupDelay)
        #expect(f.summary == ["startup_delay firing critical"])
        #expect(f[0].detectedAt == t0 + 6000, "the first sample more than 5 s after the first request")
        #expect(f[0].detail("stuck") == .bool(true))
    }

    @Test func stuckStartupFiresOnAWatermarkTickWithoutWaitingForPlayback() {
        var engine = DetectionEngine()
        var findings: [Finding] = []
        engine.process(sample("stuck", at: t0, "ot=m,su"), into: &findings)
        engine.advance(to: t0 + 5000, into: &findings)
        #expect(findings.isEmpty, "5 s is not past the 5 s threshold")
        engine.advance(to: t0 + 5001, into: &findings)
        #expect(findings.summary == ["startup_delay firing critical"])
        #expect(findings.first?.detectedAt == t0 + 5001)
        // Another session's records move the watermark too.
        engine.process(sample("other", at: t0 + 20_000, "ot=m,su"), into: &findings)
        engine.process(sample("stuck", at: t0 + 20_100, "ot=av,bl=3000"), into: &findings)
        #expect(findings.summary == ["startup_delay firing critical", "startup_delay resolved critical"])
        #expect(findings.last?.detail("startup_ms") == .int(20_100))
    }

    @Test func sessionJoinedMidStreamHasNoStartupFinding() {
        let samples = [sample("s", at: t0, "ot=av,bl=18000"), sample("s", at: t0 + 9000, "ot=av,bl=18000")]
        #expect(run(samples).findings.of(.startupDelay).isEmpty)
    }

    @Test func abandonedStuckStartupResolvesWhenTheSessionEnds() {
        var engine = DetectionEngine()
        var findings: [Finding] = []
        engine.process(sample("gone", at: t0, "ot=m,su"), into: &findings)
        engine.advance(to: t0 + 400_000, into: &findings)
        #expect(findings.summary == ["startup_delay firing critical", "startup_delay resolved critical"])
        #expect(findings.last?.detail("resolution") == .string("session_idle"))
        #expect(engine.liveSessionCount == 0)
    }
}
