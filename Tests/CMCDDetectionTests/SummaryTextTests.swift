@testable import SentinelJSON
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

/// A finding written field by field must be exactly what `JSONWriter` writes for its value.
@Suite struct FindingJSONTests {
    @Test func timesAsTheGeneralFormatterWritesThem() {
        var rng = SummaryTextTests.Words(state: 5)
        var values: [Int64] = [0, -1, 1, 86_399_999, 86_400_000, -86_400_000, 253_402_300_799_999, 253_402_300_800_000, -62_167_219_200_000, -62_167_219_200_001]
        for _ in 0..<20_000 { values.append(Int64(bitPattern: rng.next()) >> Int64(20 + rng.next() % 30)) }
        for ms in values {
            var bytes: [UInt8] = []
            RFC3339.append(milliseconds: ms, to: &bytes)
            #expect(RFC3339.format(milliseconds: ms) == RFC3339.formatAnyYear(RFC3339.fields(milliseconds: ms)), "\(ms)")
            #expect(String(decoding: bytes, as: UTF8.self) == RFC3339.formatAnyYear(RFC3339.fields(milliseconds: ms)), "\(ms)")
        }
        #expect(RFC3339.format(milliseconds: 253_402_300_800_000) == "10000-01-01T00:00:00.000Z")
    }

    @Test func findingsAsJSONWriterWritesTheirValue() {
        let findings = [
            Finding(
                type: .bufferDrop, status: .firing, severity: .critical, sessionID: "s\"1\\\u{1}é\u{2028}", contentID: "news\n", edgeLocation: nil,
                startedAt: 1_720_015_623_481, detectedAt: 1_720_015_624_000, summary: "Buffer fell 75.0% \"fast\"",
                details: [("drop_percent", .double(75)), ("from_ms", .int(20_000)), ("nested", .object([("a", .array([.null, .bool(true)]))]))]),
            Finding(
                type: .incident, status: .resolved, severity: .warning, sessionID: "", contentID: nil, edgeLocation: "FRA56-C2",
                startedAt: -5, detectedAt: 253_402_300_800_000, summary: "", details: []),
        ]
        for finding in findings {
            var written: [UInt8] = []
            finding.writeJSON(into: &written)
            var expected: [UInt8] = []
            JSONWriter.write(finding.jsonValue, into: &expected)
            #expect(String(decoding: written, as: UTF8.self) == String(decoding: expected, as: UTF8.self))
            #expect(finding.jsonLine == JSONWriter.string(finding.jsonValue))
        }
    }
}
