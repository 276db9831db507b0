import Testing

@testable import CMCD

struct ByteWordsTests {
    /// `lowercaseLetters` flags exactly the bytes a-z, whatever their neighbours.
    @Test func lowercaseLettersAreExact() {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<2_000 {
            let word = rng.next()
            let flags = ByteWords.lowercaseLetters(word)
            for k in 0..<8 {
                let byte = UInt8(truncatingIfNeeded: word >> (8 * UInt64(k)))
                let flagged = flags >> (8 * UInt64(k)) & 0x80 != 0
                #expect(flagged == (byte >= 0x61 && byte <= 0x7A), "byte \(byte) at \(k) of \(String(word, radix: 16))")
            }
        }
        // The lowest flag of the string reader's stop test is exact.
        for _ in 0..<20_000 {
            var word = rng.next()
            if rng.next() % 2 == 0 { word = word & 0x3F3F_3F3F_3F3F_3F3F | 0x4040_4040_4040_4040 }  // mostly plain bytes
            let stop = ByteWords.below(word, 0x2D) | ByteWords.equal(word, 0x5C) | ByteWords.atLeast(word, 0x7F)
            let bytes = (0..<8).map { UInt8(truncatingIfNeeded: word >> (8 * UInt64($0))) }
            let expected = bytes.firstIndex { $0 < 0x2D || $0 == 0x5C || $0 >= 0x7F }
            #expect((stop == 0 ? nil : ByteWords.firstFlagged(stop)) == expected, "\(String(word, radix: 16))")
        }
        for byte in 0...255 {
            let word = UInt64(byte) << 24 | 0xFF00_FF00_0061_7A40
            #expect((ByteWords.lowercaseLetters(word) >> 24 & 0x80 != 0) == (byte >= 0x61 && byte <= 0x7A), "\(byte)")
        }
    }
}
