#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Finding a byte in a buffer with the C library's `memchr` (vector instructions, not a
/// byte at a time as `firstIndex(of:)` goes).
public enum ByteSearch {
    /// The index of the first `byte` in `bytes[from..<to]`, or nil.
    @inlinable
    public static func first(_ byte: UInt8, in bytes: UnsafeBufferPointer<UInt8>, from: Int, to: Int) -> Int? {
        guard from < to, let base = bytes.baseAddress, let hit = memchr(base + from, Int32(byte), to - from) else { return nil }
        return base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
    }
}
