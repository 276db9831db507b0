/// A session id as the engine's index compares it: up to 64 bytes (the CMCD limit for `sid`)
/// held inline, so that finding a session reads no memory but the index and the session's
/// own state. Longer ids (possible only for samples built by hand) keep a prefix and are
/// told apart by comparing the strings.
struct SessionKey {
    static let inlineBytes = 64
    private var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    /// Bytes of the id; the id is longer than `inlineBytes` when this is larger.
    private(set) var count: Int = 0
    /// A per-process seeded hash of the whole id (never 0).
    private(set) var hash: UInt64 = 0

    init() {}

    init(_ id: String) {
        var id = id
        self = id.withUTF8 { SessionKey(bytes: $0) }
    }

    @inline(__always)
    init(bytes: UnsafeBufferPointer<UInt8>) {
        let count = bytes.count
        self.count = count
        // The whole id in zero-padded words, then its length: an injective encoding. Each word
        // is loaded once, hashed and (within `inlineBytes`) kept: no byte copies, whose
        // narrow stores the wide loads comparing keys could not be forwarded from.
        var sip = SipHash13()
        if let base = bytes.baseAddress {
            let raw = UnsafeRawPointer(base)
            var offset = 0
            while offset &+ 8 <= count {
                let word = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
                sip.compress(word)
                keep(word, at: offset)
                offset &+= 8
            }
            let rest = count &- offset
            if rest > 0 {
                var word: UInt64 = 0
                if count >= 8 {
                    // The last eight bytes, shifted so that only the `rest` new ones remain.
                    word = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: count &- 8, as: UInt64.self)) >> UInt64(8 &* (8 &- rest))
                } else {
                    for k in 0..<rest { word |= UInt64(raw.load(fromByteOffset: k, as: UInt8.self)) << UInt64(8 &* k) }
                }
                sip.compress(word)
                keep(word, at: offset)
            }
        }
        let h = sip.finalize(UInt64(count))
        hash = h == 0 ? 1 : h
    }

    /// Keeps the id's word at byte `offset` when it falls within `inlineBytes`.
    @inline(__always)
    private mutating func keep(_ word: UInt64, at offset: Int) {
        guard offset < Self.inlineBytes else { return }
        withUnsafeMutableBytes(of: &words) { $0.storeBytes(of: word, toByteOffset: offset, as: UInt64.self) }
    }

    /// Whether the whole id is held inline (so that equal keys mean equal ids).
    var isComplete: Bool { count <= Self.inlineBytes }

    /// Same hash, length and inline bytes.
    func sameBytes(as other: SessionKey) -> Bool {
        guard hash == other.hash, count == other.count else { return false }
        let a = words
        let b = other.words
        return a.0 == b.0 && a.1 == b.1 && a.2 == b.2 && a.3 == b.3 && a.4 == b.4 && a.5 == b.5 && a.6 == b.6 && a.7 == b.7
    }
}

/// SipHash-1-3's rounds (those of Swift's `Hasher`) over whole 64-bit words, keyed at
/// random per process and written out so that they inline: a viewer cannot choose ids that
/// collide in the session index without knowing the key. (Padding differs from the byte
/// oriented reference: the caller ends with the length as a word of its own.)
struct SipHash13 {
    private static let key = (UInt64.random(in: .min ... .max), UInt64.random(in: .min ... .max))
    private var v0: UInt64, v1: UInt64, v2: UInt64, v3: UInt64

    init() {
        let (k0, k1) = Self.key
        v0 = k0 ^ 0x736f_6d65_7073_6575
        v1 = k1 ^ 0x646f_7261_6e64_6f6d
        v2 = k0 ^ 0x6c79_6765_6e65_7261
        v3 = k1 ^ 0x7465_6462_7974_6573
    }

    @inline(__always) private mutating func round() {
        v0 = v0 &+ v1
        v1 = v1.rotatedLeft(13) ^ v0
        v0 = v0.rotatedLeft(32)
        v2 = v2 &+ v3
        v3 = v3.rotatedLeft(16) ^ v2
        v0 = v0 &+ v3
        v3 = v3.rotatedLeft(21) ^ v0
        v2 = v2 &+ v1
        v1 = v1.rotatedLeft(17) ^ v2
        v2 = v2.rotatedLeft(32)
    }

    @inline(__always) mutating func compress(_ m: UInt64) {
        v3 ^= m
        round()
        v0 ^= m
    }

    /// Absorbs `last` (the message length, say) and returns the hash.
    @inline(__always) mutating func finalize(_ last: UInt64) -> UInt64 {
        compress(last)
        v2 ^= 0xFF
        round()
        round()
        round()
        return v0 ^ v1 ^ v2 ^ v3
    }
}

extension UInt64 {
    @inline(__always) fileprivate func rotatedLeft(_ n: UInt64) -> UInt64 { (self << n) | (self >> (64 - n)) }
}

/// Open-addressing index from a session key's hash to the session's slot (linear probing,
/// deletion by backward shift, so no tombstones build up). The caller confirms a candidate
/// slot against its own keys: the table holds a 32-bit tag of each hash and the slot
/// number, 8 bytes a bucket, so that the index of many sessions stays in a core's cache.
@usableFromInline
struct SessionTable: Sendable {
    private struct Bucket {
        /// The hash's high half (never 0; 0 marks an empty bucket). Its low bits are the
        /// home bucket, so entries can be moved without their full hash.
        var tag: UInt32
        var slot: Int32
    }

    private var buckets: [Bucket]
    private var mask: Int
    @usableFromInline private(set) var count = 0

    init() {
        buckets = Array(repeating: Bucket(tag: 0, slot: -1), count: 64)
        mask = 63
    }

    @inline(__always)
    private static func tag(_ hash: UInt64) -> UInt32 {
        let tag = UInt32(truncatingIfNeeded: hash >> 32)
        return tag == 0 ? 1 : tag
    }

    /// The slot with this hash that `matches` accepts.
    func find(hash: UInt64, matches: (Int32) -> Bool) -> Int32? {
        let tag = Self.tag(hash)
        var i = Int(tag) & mask
        return buckets.withUnsafeBufferPointer { b in
            while true {
                let bucket = b[i]
                if bucket.tag == 0 { return nil }
                if bucket.tag == tag, matches(bucket.slot) { return bucket.slot }
                i = (i + 1) & mask
            }
        }
    }

    mutating func insert(hash: UInt64, slot: Int32) {
        if (count + 1) * 2 > buckets.count { grow() }
        place(Bucket(tag: Self.tag(hash), slot: slot))
        count += 1
    }

    /// Removes the entry for `slot` (filed under `hash`).
    mutating func remove(hash: UInt64, slot: Int32) {
        let tag = Self.tag(hash)
        var i = Int(tag) & mask
        while buckets[i].tag != 0 {
            if buckets[i].tag == tag, buckets[i].slot == slot { break }
            i = (i + 1) & mask
        }
        guard buckets[i].tag != 0 else { return }
        count -= 1
        // Backward shift: pull later entries of the probe run into the hole when their home
        // bucket allows it.
        var hole = i
        var j = (i + 1) & mask
        while buckets[j].tag != 0 {
            let home = Int(buckets[j].tag) & mask
            // Move j into the hole unless its home lies cyclically in (hole, j].
            let distanceToHome = (j - home) & mask
            let distanceToHole = (j - hole) & mask
            if distanceToHome >= distanceToHole {
                buckets[hole] = buckets[j]
                hole = j
            }
            j = (j + 1) & mask
        }
        buckets[hole] = Bucket(tag: 0, slot: -1)
    }

    private mutating func place(_ bucket: Bucket) {
        var i = Int(bucket.tag) & mask
        while buckets[i].tag != 0 { i = (i + 1) & mask }
        buckets[i] = bucket
    }

    private mutating func grow() {
        let old = buckets
        buckets = Array(repeating: Bucket(tag: 0, slot: -1), count: old.count * 2)
        mask = buckets.count - 1
        for bucket in old where bucket.tag != 0 { place(bucket) }
    }
}
