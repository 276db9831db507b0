/// Eight bytes at a time: each helper flags bytes of interest in a little-endian word by
/// setting their high bit. Only the lowest flag is exact (a borrow may flag bytes above it),
/// which is all the callers use, through `firstFlagged`.
public enum ByteWords {
    @usableFromInline static let ones: UInt64 = 0x0101_0101_0101_0101
    @usableFromInline static let high: UInt64 = 0x8080_8080_8080_8080

    /// The eight bytes at `p`, first byte lowest.
    @inlinable @inline(__always)
    public static func load(_ p: UnsafePointer<UInt8>) -> UInt64 {
        UInt64(littleEndian: UnsafeRawPointer(p).loadUnaligned(as: UInt64.self))
    }

    /// Flags the bytes below `n` (`n` at most 0x80).
    @inlinable @inline(__always) static func below(_ x: UInt64, _ n: UInt8) -> UInt64 { (x &- ones &* UInt64(n)) & ~x & high }

    /// Flags the bytes equal to `b`.
    @inline(__always) static func equal(_ x: UInt64, _ b: UInt8) -> UInt64 { below(x ^ (ones &* UInt64(b)), 1) }

    /// Flags the bytes at or above `n` (`n` from 1 to 0x80).
    @inlinable @inline(__always) static func atLeast(_ x: UInt64, _ n: UInt8) -> UInt64 { (x | (x &+ ones &* UInt64(0x80 &- n))) & high }

    /// Whether every byte is printable ASCII (0x20 to 0x7E), eight at a time. (A flag
    /// appears only when some byte is outside: borrows and carries start at such a byte.)
    @inlinable @inline(__always)
    public static func isPrintableASCII(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        let count = bytes.count
        guard count >= 8 else {
            for k in 0..<count where base[k] &- 0x20 >= 0x5F { return false }
            return true
        }
        var flags: UInt64 = 0
        var k = 0
        while k &+ 8 <= count {
            let x = load(base + k)
            flags |= below(x, 0x20) | atLeast(x, 0x7F)
            k &+= 8
        }
        let last = load(base + (count &- 8))  // the last bytes, overlapping those read
        flags |= below(last, 0x20) | atLeast(last, 0x7F)
        return flags == 0
    }

    /// How many lower-case letters the word starts with (at most seven: the last byte is
    /// never counted, so that a byte after the run is always in the word).
    @inline(__always) static func lowercaseRun(_ x: UInt64) -> Int { firstFlagged(~lowercaseLetters(x) & high | high << 56) }

    /// The word's first `length` bytes (1 to 7) as a packed code, first byte most
    /// significant, as `CMCDKeys.packedCode` packs text.
    @inline(__always) static func packedPrefix(_ x: UInt64, length: Int) -> UInt64 {
        let bits = 8 &* UInt64(length)
        return (x & (UInt64.max >> (64 &- bits))).byteSwapped >> (64 &- bits)
    }

    /// Flags the lower-case ASCII letters (exactly: no borrow crosses bytes).
    @inline(__always) static func lowercaseLetters(_ x: UInt64) -> UInt64 {
        let low7 = x & ~high
        return (low7 &+ ones &* 0x1F) & ~(low7 &+ ones &* 0x05) & ~x & high
    }

    /// The index in the word of the lowest flagged byte (`flags` is not 0).
    @inline(__always) static func firstFlagged(_ flags: UInt64) -> Int { flags.trailingZeroBitCount >> 3 }

    /// The value of eight ASCII decimal digits (first byte most significant), nil when any
    /// byte is not a digit.
    @inlinable @inline(__always)
    public static func eightDigits(_ x: UInt64) -> UInt64? {
        let tens: UInt64 = 0xF0F0_F0F0_F0F0_F0F0
        let zeros: UInt64 = 0x3030_3030_3030_3030
        // Every byte is 0x30...0x39: its high nibble is 3, and stays 3 when 6 is added.
        guard x & tens == zeros, (x &+ 0x0606_0606_0606_0606) & tens == zeros else { return nil }
        return digitsValue(x, count: 8)
    }

    /// The value of the first `count` bytes of `x` (1 to 8), which must be ASCII digits. They
    /// are shifted to the top with '0's below, then combined in three multiply-add steps:
    /// digit pairs, then fours, then all eight.
    @inlinable @inline(__always)
    public static func digitsValue(_ x: UInt64, count: Int) -> UInt64 {
        let zeros: UInt64 = 0x3030_3030_3030_3030
        let shift = UInt64(64 &- 8 &* count)
        var v = ((x << shift) | (zeros >> (64 &- shift))) &- zeros  // each byte 0...9 (smart shifts: 64 gives 0)
        v = (v &* 10 &+ (v >> 8)) & 0x00FF_00FF_00FF_00FF  // each 16 bits: 0...99
        v = (v &* 100 &+ (v >> 16)) & 0x0000_FFFF_0000_FFFF  // each 32 bits: 0...9999
        return (v &* 10000 &+ (v >> 32)) & 0xFFFF_FFFF
    }
}
