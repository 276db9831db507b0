import SentinelTestSupport
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
            let stop = ByteWords.below(word, 0x2D) | ByteWords.equal(word, 0x5C) | ByteWords.equal(word, 0x3F) | ByteWords.atLeast(word, 0x7F)
            let bytes = (0..<8).map { UInt8(truncatingIfNeeded: word >> (8 * UInt64($0))) }
            let expected = bytes.firstIndex { $0 < 0x2D || $0 == 0x5C || $0 == 0x3F || $0 >= 0x7F }
            #expect((stop == 0 ? nil : ByteWords.firstFlagged(stop)) == expected, "\(String(word, radix: 16))")
        }
        for byte in 0...255 {
            let word = UInt64(byte) << 24 | 0xFF00_FF00_0061_7A40
            #expect((ByteWords.lowercaseLetters(word) >> 24 & 0x80 != 0) == (byte >= 0x61 && byte <= 0x7A), "\(byte)")
        }
    }

    /// `isPrintableASCII` agrees with the byte-by-byte rule for every length and position of
    /// an offending byte (one, several, or none; low, high, or 0x7F).
    @Test(.ownThread) func printableASCIIIsExact() {
        var rng = SplitMix64(seed: 23)
        for _ in 0..<20_000 {
            let count = Int(rng.next() % 40)
            var bytes = (0..<count).map { _ in UInt8(0x20 + rng.next() % 0x5F) }
            for _ in 0..<Int(rng.next() % 3) where count > 0 {
                let bad: [UInt8] = [0x00, 0x09, 0x1F, 0x7F, 0x80, 0xC3, 0xFF]
                bytes[Int(rng.next() % UInt64(count))] = bad[Int(rng.next() % UInt64(bad.count))]
            }
            let expected = bytes.allSatisfy { $0 >= 0x20 && $0 <= 0x7E }
            #expect(bytes.withUnsafeBufferPointer { ByteWords.isPrintableASCII($0) } == expected, "\(bytes)")
        }
    }

    /// Digits read a word at a time: the run's end is found exactly, and its value is the
    /// number written, whatever follows it.
    @Test func digitsAreReadAWordAtATime() {
        var rng = SplitMix64(seed: 17)
        func next() -> UInt64 { rng.next() }
        for _ in 0..<20_000 {
            let count = Int(next() % 8) + 1
            var value: UInt64 = 0
            var bytes: [UInt8] = []
            for _ in 0..<count {
                let d = next() % 10
                value = value * 10 + d
                bytes.append(UInt8(0x30 + d))
            }
            while bytes.count < 8 {
                var b = UInt8(truncatingIfNeeded: next())
                if bytes.count == count, b >= 0x30, b <= 0x39 { b = [0x2F, 0x3A, 0x25, 0x00, 0xFF][Int(next() % 5)] }  // the run ends here
                bytes.append(b)
            }
            let word = bytes.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
            let end = ByteWords.below(word, 0x30) | ByteWords.atLeast(word, 0x3A)
            #expect((count == 8 ? end == 0 || ByteWords.firstFlagged(end) == 8 : ByteWords.firstFlagged(end) == count), "\(bytes)")
            #expect(ByteWords.digitsValue(word, count: count) == value, "\(bytes)")
            #expect(ByteWords.eightDigits(word) == (count == 8 ? value : nil), "\(bytes)")
        }
    }
}

struct ByteBlocksTests {
    /// The block masks flag exactly the bytes of interest, and the SSE2 versions agree with
    /// the portable ones (on a machine without SSE2 both are the portable ones).
    @Test func blockMasksAreExact() {
        var rng = SplitMix64(seed: 31)
        var bytes = [UInt8](repeating: 0, count: 64)
        for round in 0..<20_000 {
            for k in 0..<64 {
                // Mostly plain text with the bytes of interest (and their neighbours) mixed in.
                let r = rng.next()
                bytes[k] = round % 4 == 0 ? UInt8(truncatingIfNeeded: r) : [0x09, 0x08, 0x0A, 0x2C, 0x2D, 0x3F, 0x5C, 0x7E, 0x7F, 0x80, 0xFF, 0x00][Int(r % 12)]
                if r >> 40 % 3 == 0 { bytes[k] = UInt8(0x2D + r % 0x50) }
            }
            bytes.withUnsafeBufferPointer { b in
                let p = b.baseAddress!
                var expected64: UInt64 = 0
                for k in 0..<64 where p[k] == 0x09 { expected64 |= 1 << UInt64(k) }
                #expect(ByteBlocks.equal64(p, 0x09) == expected64)
                for offset in stride(from: 0, through: 48, by: 16) {
                    var tabs: UInt32 = 0
                    var stops: UInt32 = 0
                    for k in 0..<16 {
                        let c = p[offset + k]
                        if c == 0x09 { tabs |= 1 << UInt32(k) }
                        if c < 0x2D || c == 0x3F || c == 0x5C || c >= 0x7F { stops |= 1 << UInt32(k) }
                    }
                    #expect(ByteBlocks.equal(p + offset, 0x09) == tabs)
                    #expect(ByteBlocks.portableEqual(p + offset, 0x09) == tabs)
                    #expect(ByteBlocks.stringStops(p + offset) == stops)
                    #expect(ByteBlocks.portableStringStops(p + offset) == stops)
                }
            }
        }
        // Every byte value in every position: whether the string scan stops at it, and
        // equality with that same value.
        for value in 0...255 {
            for position in 0..<16 {
                var block = [UInt8](repeating: UInt8(ascii: "a"), count: 16)
                block[position] = UInt8(value)
                block.withUnsafeBufferPointer { b in
                    let stop = value < 0x2D || value == 0x3F || value == 0x5C || value >= 0x7F
                    #expect(ByteBlocks.stringStops(b.baseAddress!) == (stop ? 1 << UInt32(position) : 0))
                    #expect(ByteBlocks.equal(b.baseAddress!, UInt8(value)) == (value == 0x61 ? 0xFFFF : 1 << UInt32(position)))
                }
            }
        }
    }
}
