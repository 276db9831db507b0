#if arch(x86_64) && canImport(_Builtin_intrinsics.intel)
import _Builtin_intrinsics.intel
#endif

/// Sixteen bytes at a time: each helper returns a bit mask of the block's bytes of interest
/// (bit k for the byte at `p + k`, exact for every byte), for loops that visit those bytes
/// with `trailingZeroBitCount`. On x86-64 each is a few SSE2 instructions (a compare and
/// `pmovmskb`, which Swift's own SIMD types do not compile to); elsewhere the portable
/// versions below, which tests also hold the SSE2 ones to.
///
/// The caller guarantees `size` readable bytes at `p`.
public enum ByteBlocks {
    /// Bytes per block.
    public static let size = 16

    /// Whether the masks are vector instructions here (SSE2). Where they are not, callers
    /// with a word-at-a-time loop of their own use that instead.
    @inlinable public static var isVectorized: Bool {
        #if arch(x86_64) && canImport(_Builtin_intrinsics.intel)
        return true
        #else
        return false
        #endif
    }

    /// The bytes equal to `byte`.
    @inlinable @inline(__always)
    public static func equal(_ p: UnsafePointer<UInt8>, _ byte: UInt8) -> UInt32 {
        #if arch(x86_64) && canImport(_Builtin_intrinsics.intel)
        let v = UnsafeRawPointer(p).loadUnaligned(as: __m128i.self)
        return UInt32(truncatingIfNeeded: _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(CChar(bitPattern: byte)))))
        #else
        return portableEqual(p, byte)
        #endif
    }

    /// The bytes equal to `byte` among the 64 at `p` (bit k for `p[k]`).
    @inlinable @inline(__always)
    public static func equal64(_ p: UnsafePointer<UInt8>, _ byte: UInt8) -> UInt64 {
        UInt64(equal(p, byte)) | UInt64(equal(p + 16, byte)) << 16 | UInt64(equal(p + 32, byte)) << 32 | UInt64(equal(p + 48, byte)) << 48
    }

    /// The bytes a plain quoted string in a URL does not take as they are: below `-`
    /// (controls, space, `"`, `#`, `%`, `&`, `+`, `,`), `?`, `\`, and 0x7F or above.
    @inlinable @inline(__always)
    public static func stringStops(_ p: UnsafePointer<UInt8>) -> UInt32 {
        #if arch(x86_64) && canImport(_Builtin_intrinsics.intel)
        let v = UnsafeRawPointer(p).loadUnaligned(as: __m128i.self)
        // A signed comparison: bytes of 0x80 and above are negative, so below '-' too.
        let low = _mm_cmplt_epi8(v, _mm_set1_epi8(CChar(UInt8(ascii: "-"))))
        let marks = _mm_or_si128(
            _mm_cmpeq_epi8(v, _mm_set1_epi8(CChar(UInt8(ascii: "?")))),
            _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(CChar(UInt8(ascii: "\\")))), _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7F))))
        return UInt32(truncatingIfNeeded: _mm_movemask_epi8(_mm_or_si128(low, marks)))
        #else
        return portableStringStops(p)
        #endif
    }

    /// `equal` eight bytes at a time: the bytes equal to `byte` become the exact zero bytes
    /// of `x ^ pattern`, flagged in their high bits, and one multiplication gathers the eight
    /// flags into the top byte (each flag lands on its own bit: no two products overlap).
    @inlinable
    public static func portableEqual(_ p: UnsafePointer<UInt8>, _ byte: UInt8) -> UInt32 {
        @inline(__always) func mask8(_ x: UInt64) -> UInt32 {
            let low7: UInt64 = 0x7F7F_7F7F_7F7F_7F7F
            let y = x ^ (0x0101_0101_0101_0101 &* UInt64(byte))
            let zeros = ~(((y & low7) &+ low7) | y | low7)
            return UInt32(truncatingIfNeeded: ((zeros >> 7) &* 0x0102_0408_1020_4080) >> 56)
        }
        return mask8(ByteWords.load(p)) | mask8(ByteWords.load(p + 8)) << 8
    }

    /// `stringStops` a byte at a time (the query reader does not use it where
    /// `isVectorized` is false).
    @inlinable
    public static func portableStringStops(_ p: UnsafePointer<UInt8>) -> UInt32 {
        var mask: UInt32 = 0
        for k in 0..<size {
            let b = p[k]
            if b < UInt8(ascii: "-") || b == UInt8(ascii: "?") || b == UInt8(ascii: "\\") || b >= 0x7F { mask |= 1 << UInt32(k) }
        }
        return mask
    }
}
