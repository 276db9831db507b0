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
    /// Each slot's text as bytes, compared without touching the string: its length, then
    /// the bytes (`slotBytes` per slot).
    private var texts: [UInt8]
    private let mask: Int
    /// Texts longer than this are not cached.
    public static let maxBytes = 128
    private static let slotBytes = maxBytes + 1

    /// `capacity` is rounded up to a power of two; 0 caches nothing.
    public init(capacity: Int = 1024) {
        var size = 1
        while size < capacity { size <<= 1 }
        if capacity <= 0 { size = 0 }
        hashes = [UInt64](repeating: 0, count: size)
        strings = [String](repeating: "", count: size)
        texts = [UInt8](repeating: 0, count: size * Self.slotBytes)
        mask = size - 1
    }

    /// The shared string for these bytes.
    public mutating func string(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        let count = bytes.count
        guard mask >= 0, count <= Self.maxBytes, let base = bytes.baseAddress else {
            return String(decoding: bytes, as: UTF8.self)
        }
        // A cheap hash (the first and last eight bytes and the length, multiply-mixed): the
        // bytes are compared anyway, so a collision only costs a replaced slot.
        var head: UInt64 = 0
        var tail: UInt64 = 0
        if count >= 8 {
            head = ByteWords.load(base)
            tail = ByteWords.load(base + (count &- 8))
        } else {
            for k in 0..<count { head |= UInt64(base[k]) << (8 &* UInt64(k)) }
        }
        var hash = (head &* 0x9E37_79B9_7F4A_7C15) ^ (tail &+ UInt64(count)) &* 0xC2B2_AE3D_27D4_EB4F
        hash ^= hash >> 31
        hash |= 1  // 0 means "empty slot"
        let slot = Int(truncatingIfNeeded: hash) & mask
        let found = hashes.withUnsafeBufferPointer { $0[slot] == hash }
            && texts.withUnsafeBufferPointer {
                let text = $0.baseAddress! + slot &* Self.slotBytes
                return Int(text[0]) == count && Self.sameBytes(text + 1, base, count)
            }
        if found {
            return strings.withUnsafeBufferPointer { $0[slot] }
        }
        let text = String(decoding: bytes, as: UTF8.self)
        hashes[slot] = hash
        strings[slot] = text
        texts.withUnsafeMutableBufferPointer {
            let text = $0.baseAddress! + slot &* Self.slotBytes
            text[0] = UInt8(count)
            (text + 1).update(from: base, count: count)
        }
        return text
    }

    /// Whether `count` bytes at `a` and `b` are equal, a word at a time (these texts are
    /// short: a `memcmp` call costs more than the comparison).
    @inline(__always)
    private static func sameBytes(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        guard count >= 8 else {
            for k in 0..<count where a[k] != b[k] { return false }
            return true
        }
        var k = 0
        while k &+ 8 <= count {
            if ByteWords.load(a + k) != ByteWords.load(b + k) { return false }
            k &+= 8
        }
        // The last bytes as the last eight (overlapping what was compared).
        return k == count || ByteWords.load(a + (count &- 8)) == ByteWords.load(b + (count &- 8))
    }
}
