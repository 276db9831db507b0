#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A small, bounded cache that hands out one shared `String` per distinct short text (content
/// ids, say), so that a value repeated on every record costs neither an allocation here nor a
/// byte comparison where it is compared later (equal strings sharing storage compare at once).
///
/// Direct-mapped: a new text replaces whatever shared its slot, so memory never grows beyond
/// `capacity` entries whatever the input. The texts must be valid UTF-8 (callers pass checked
/// ASCII).
public struct InternedStrings: Sendable {
    private var hashes: [UInt64]
    private var strings: [String]
    private let mask: Int
    /// Texts longer than this are not cached.
    public static let maxBytes = 128

    /// `capacity` is rounded up to a power of two; 0 caches nothing.
    public init(capacity: Int = 1024) {
        var size = 1
        while size < capacity { size <<= 1 }
        if capacity <= 0 { size = 0 }
        hashes = [UInt64](repeating: 0, count: size)
        strings = [String](repeating: "", count: size)
        mask = size - 1
    }

    /// The shared string for these bytes.
    public mutating func string(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        guard mask >= 0, bytes.count <= Self.maxBytes, let base = bytes.baseAddress else {
            return String(decoding: bytes, as: UTF8.self)
        }
        // FNV-1a, with the length mixed in so that 0 never means "empty slot" for real text.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325 ^ UInt64(bytes.count)
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0100_0000_01b3 }
        hash |= 1
        let slot = Int(truncatingIfNeeded: hash ^ (hash >> 29)) & mask
        if hashes[slot] == hash {
            var cached = strings[slot]
            let same = cached.withUTF8 { $0.count == bytes.count && (bytes.isEmpty || memcmp($0.baseAddress!, base, bytes.count) == 0) }
            if same { return cached }
        }
        let text = String(decoding: bytes, as: UTF8.self)
        hashes[slot] = hash
        strings[slot] = text
        return text
    }
}
