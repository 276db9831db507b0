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
        for byte in 0...255 {
            let word = UInt64(byte) << 24 | 0xFF00_FF00_0061_7A40
            #expect((ByteWords.lowercaseLetters(word) >> 24 & 0x80 != 0) == (byte >= 0x61 && byte <= 0x7A), "\(byte)")
        }
    }
}
