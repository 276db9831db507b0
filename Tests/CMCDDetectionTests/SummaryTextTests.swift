import Testing

@testable import CMCDDetection

/// `SummaryText` must write exactly what the standard interpolation wrote before it.
@Suite struct SummaryTextTests {
    /// Deterministic pseudo-random words (the LCG the other tests here use).
    struct Words {
        var state: UInt64
        mutating func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state ^ (state >> 29)
        }
    }

    @Test func integersAsTheStandardInterpolationWritesThem() {
        var rng = Words(state: 7)
        var values: [Int64] = [0, 1, -1, 9, 10, -10, 99, 100, 1_000_000, .max, .min, .min + 1]
        for _ in 0..<10_000 { values.append(Int64(bitPattern: rng.next()) >> Int64(rng.next() % 64)) }
        for n in values {
            let text: SummaryText = "a \(n) b"
            #expect(text.text == "a \(n) b")
        }
    }

    @Test func oneDecimalAsDoubleDescriptionWritesIt() {
        // Every drop percentage the detector can produce: tenths from 0 to 100 %.
        for tenths in 0...1000 {
            let percent = Double(tenths) / 10
            let text: SummaryText = "\(oneDecimal: percent)%"
            #expect(text.text == "\(percent)%")
        }
        // And values rounded the detector's way from arbitrary ratios, negatives included.
        var rng = Words(state: 11)
        for _ in 0..<10_000 {
            let value = ((Double(rng.next() % 2_000_001) - 1_000_000) / 7 * 10).rounded() / 10
            let text: SummaryText = "\(oneDecimal: value)"
            #expect(text.text == "\(value)")
        }
    }

    @Test func secondsAsTheEngineWroteThemAndNegativesWithASign() {
        // What the engine wrote before, right for durations that are not negative.
        func old(_ ms: Int64) -> String {
            let tenths = (ms + 50) / 100
            return "\(tenths / 10).\(tenths % 10) s"
        }
        var values: [Int64] = [0, 49, 50, 99, 950, 1_000, 4_000, 86_400_000]
        var rng = Words(state: 3)
        for _ in 0..<10_000 { values.append(Int64(rng.next() % 10_000_000)) }
        for ms in values {
            let text: SummaryText = "after \(seconds: ms)"
            #expect(text.text == "after \(old(ms))")
            // A negative duration is the same magnitude with a minus sign (it used to read
            // "-1.-4 s"), and nothing that rounds to zero gets one.
            let negative: SummaryText = "after \(seconds: -ms)"
            #expect(negative.text == "after \(old(ms) == "0.0 s" ? "" : "-")\(old(ms))")
        }
        let fixed: [(Int64, String)] = [(-1, "0.0 s"), (-49, "0.0 s"), (-50, "-0.1 s"), (-1_449, "-1.4 s"), (-1_450, "-1.5 s"), (.min, "-9223372036854775.8 s")]
        for (ms, text) in fixed {
            let written: SummaryText = "\(seconds: ms)"
            #expect(written.text == text)
        }
    }

    @Test func textAndLiteralsAndTheCapacity() {
        let reason = "session idle"
        let text: SummaryText = "Buffer drop episode closed: \(reason)"
        #expect(text.text == "Buffer drop episode closed: session idle")
        let plain: SummaryText = "player is rebuffering (sta=r)"
        #expect(plain.text == "player is rebuffering (sta=r)")
        let long = String(repeating: "x", count: 300)
        let cut: SummaryText = "ab\(long)"
        #expect(cut.text == "ab" + String(repeating: "x", count: SummaryText.capacity - 2))
    }
}
