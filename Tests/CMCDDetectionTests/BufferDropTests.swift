import SentinelJSON
import Testing

@testable import CMCDDetection

struct BufferDropTests {
    @Test func criticalDropFiresOnceAndResolvesOnRecovery() {
        let (findings, _) = run(playing("s", buffers: [10000, 20000, 20000, 3000, 2000, 4000, 9000, 12000]))
        let drops = findings.of(.bufferDrop)
        #expect(drops.summary == ["buffer_drop firing critical", "buffer_drop resolved critical"])
        let firing = drops[0]
        #expect(firing.detail("reference_bl_ms") == .int(20000))
        #expect(firing.detail("current_bl_ms") == .int(3000))
        #expect(firing.detail("drop_percent") == .double(85))
        #expect(firing.detail("window_ms") == .int(10000))
        #expect(firing.startedAt == t0 + 1000 + 3 * 2000)
        #expect(drops[1].id == firing.id)
        #expect(drops[1].detectedAt == t0 + 1000 + 7 * 2000, "resolves at the first bl >= half the reference (10000 ms)")
        #expect(drops[1].detail("lowest_bl_ms") == .int(2000))
    }

    @Test(arguments: [
        (Int64(5001), nil as Severity?), (5000, .warning), (3001, .warning), (3000, .critical), (0, .critical),
    ])
    func thresholdsAreInclusive(current: Int64, expected: Severity?) {
        let (findings, _) = run(playing("s", buffers: [10000, current]))
        #expect(findings.of(.bufferDrop).first?.severity == expected)
    }

    @Test func referenceBelowMinimumNeverFires() {
        let samples = [sample("s", at: t0, "ot=av,bl=999"), sample("s", at: t0 + 1000, "ot=av,bl=0")]
        #expect(run(samples).findings.of(.bufferDrop).isEmpty)
        let atMinimum = [sample("s", at: t0, "ot=av,bl=1000"), sample("s", at: t0 + 1000, "ot=av,bl=0")]
        #expect(run(atMinimum).findings.of(.bufferDrop).count == 1)
    }

    @Test func referenceOutsideTheLookbackWindowIsForgotten() {
        // 20 s then 11 s later 2 s: the 20 s sample is outside the 10 s window.
        let samples = [sample("s", at: t0, "ot=av,bl=20000"), sample("s", at: t0 + 11_000, "ot=av,bl=2000")]
        #expect(run(samples).findings.of(.bufferDrop).isEmpty)
        let inside = [sample("s", at: t0, "ot=av,bl=20000"), sample("s", at: t0 + 10_000, "ot=av,bl=2000")]
        #expect(run(inside).findings.of(.bufferDrop).count == 1)
    }

    @Test func differentObjectTypesAreNotCompared() {
        let samples = [sample("s", at: t0, "ot=v,bl=20000"), sample("s", at: t0 + 1000, "ot=a,bl=2000")]
        #expect(run(samples).findings.of(.bufferDrop).isEmpty)
        let manifest = [sample("s", at: t0, "ot=v,bl=20000"), sample("s", at: t0 + 1000, "ot=m,bl=0")]
        #expect(run(manifest).findings.of(.bufferDrop).isEmpty)
    }

    @Test func v2ListsUseTheRequestedObjectType() {
        let samples = [
            sample("s", at: t0, "ot=v,bl=(20000;v 20000;a),v=2"),
            sample("s", at: t0 + 1000, "ot=v,bl=(2000;v 19000;a),v=2"),
        ]
        #expect(run(samples).findings.of(.bufferDrop).first?.detail("current_bl_ms") == .int(2000))
    }

    @Test func warningEscalatesToCriticalUnderTheSameId() {
        let (findings, _) = run(playing("s", buffers: [10000, 4000, 1000, 9000]))
        let drops = findings.of(.bufferDrop)
        #expect(drops.summary == ["buffer_drop firing warning", "buffer_drop firing critical", "buffer_drop resolved critical"])
        #expect(Set(drops.map(\.id)).count == 1)
        #expect(drops[1].detail("escalated") == .bool(true))
    }

    @Test func openEpisodeResolvesAtEndOfInput() {
        let (findings, _) = run(playing("s", buffers: [10000, 1000]), finish: true)
        let resolved = findings.of(.bufferDrop).last
        #expect(resolved?.status == .resolved)
        #expect(resolved?.detail("resolution") == .string("end_of_input"))
    }

    @Test func disabledDetectorIsSilent() {
        var rules = DetectionRules()
        rules.bufferDrop.enabled = false
        #expect(run(playing("s", buffers: [10000, 0]), rules: rules).findings.of(.bufferDrop).isEmpty)
    }
}
