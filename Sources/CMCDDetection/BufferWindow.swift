/// A session's buffer observations in its lookback window, in time order.
///
/// Most players send two to six requests in a lookback window (segments of 2 to 6 s in 10 s
/// and the reorder tolerance), so the first `inlineCapacity` observations live in the
/// session's own state: reading them costs no second cache miss after the session's, and a
/// session no allocation of its own. A window that outgrows them (low-latency parts, short
/// demuxed segments) moves to an array, and back when it has shrunk to `unspillCount`.
struct BufferWindow: RandomAccessCollection {
    static let inlineCapacity = 6
    /// A window in an array this small or smaller moves back inline (two short of full, so
    /// that a window hovering at the limit does not move at every request).
    static let unspillCount = inlineCapacity - 2

    /// How many of `inline` are in use; -1 once the window lives in `spilled`.
    private var inlineCount: Int32 = 0
    /// Every observation once there have been more than `inlineCapacity` (else empty).
    private var spilled: [BufferObservation] = []
    private var inline: (BufferObservation, BufferObservation, BufferObservation, BufferObservation, BufferObservation, BufferObservation) = (
        .empty, .empty, .empty, .empty, .empty, .empty
    )

    init() {}

    /// Whether the observations are in the array.
    var isSpilled: Bool { inlineCount < 0 }

    var startIndex: Int { 0 }
    var endIndex: Int { inlineCount >= 0 ? Int(inlineCount) : spilled.count }

    /// One observation, read on its own (no copy of the inline room).
    subscript(position: Int) -> BufferObservation {
        guard inlineCount >= 0 else { return spilled[position] }
        precondition(position >= 0 && position < Int(inlineCount), "BufferWindow index out of range")
        switch position {
        case 0: return inline.0
        case 1: return inline.1
        case 2: return inline.2
        case 3: return inline.3
        case 4: return inline.4
        default: return inline.5
        }
    }

    /// Calls `body` with the observations, oldest first, read where they are. Mutating, for
    /// the pointer to the inline room: a non-mutating read (`withUnsafeBytes(of:)`) copies
    /// all of it, 141 bytes, for each call. Reads of a few use the subscript.
    @inline(__always)
    mutating func withElements<R>(_ body: (UnsafeBufferPointer<BufferObservation>) -> R) -> R {
        guard inlineCount >= 0 else { return spilled.withUnsafeBufferPointer(body) }
        let count = Int(inlineCount)
        return withInline { body(UnsafeBufferPointer(start: $0, count: count)) }
    }

    /// The lowest stream position of the observations of the window at `window` (nil when
    /// there are none), read in place.
    static func lowestPosition(at window: UnsafePointer<BufferWindow>) -> Int64? {
        let count = Int(window.pointee.inlineCount)
        guard count >= 0 else { return window.pointee.spilled.lazy.map(\.position).min() }
        guard count > 0 else { return nil }
        let inline = (UnsafeRawPointer(window) + MemoryLayout<BufferWindow>.offset(of: \.inline)!).assumingMemoryBound(to: BufferObservation.self)
        var lowest = inline[0].position
        for k in 1..<count { lowest = Swift.min(lowest, inline[k].position) }
        return lowest
    }

    /// Adds an observation after the others (restoring a checkpoint).
    mutating func append(_ observation: BufferObservation) {
        let n = Int(inlineCount)
        if n >= 0, n < Self.inlineCapacity {
            withInline { $0[n] = observation }
            inlineCount += 1
        } else {
            spill()
            spilled.append(observation)
        }
    }

    /// Empties the window (back to the inline room, the array freed).
    mutating func removeAll() {
        inlineCount = 0
        spilled = []
    }

    /// Inserts an observation in time order (after those of equal time), drops those older
    /// than `oldest`, then keeps at most the newest `capacity`.
    mutating func insert(_ observation: BufferObservation, keepFrom oldest: Int64, capacity: Int) {
        if inlineCount >= 0 {
            // Drop what is too old first: the room it leaves is usually what the new one needs.
            let tooOld = withElements { w in w.prefix { $0.time < oldest }.count }
            if tooOld > 0 { dropFirstInline(tooOld) }
            let n = Int(inlineCount)
            guard observation.time >= oldest else { return }
            if n < Self.inlineCapacity {
                withInline { w in
                    var i = n
                    while i > 0, w[i - 1].time > observation.time {
                        w[i] = w[i - 1]
                        i -= 1
                    }
                    w[i] = observation
                }
                inlineCount = Int32(n + 1)
                if n + 1 > capacity { dropFirstInline(n + 1 - capacity) }
                return
            }
            spill()
        }
        Self.insert(observation, into: &spilled, keepFrom: oldest, capacity: capacity)
        if spilled.count <= Self.unspillCount { unspill() }
    }

    /// Moves the observations to `spilled`, with room for growth.
    private mutating func spill() {
        guard inlineCount >= 0 else { return }
        var all: [BufferObservation] = []
        all.reserveCapacity(2 * Self.inlineCapacity)
        withElements { all.append(contentsOf: $0) }
        spilled = all
        inlineCount = -1
    }

    /// Moves the observations (at most `inlineCapacity`) back inline, freeing the array.
    private mutating func unspill() {
        let all = spilled
        spilled = []
        inlineCount = Int32(all.count)
        withInline { w in
            for (k, observation) in all.enumerated() { w[k] = observation }
        }
    }

    /// Drops the `k` oldest of the inline observations (a window in the array is trimmed in
    /// `insert(_:into:keepFrom:capacity:)`).
    private mutating func dropFirstInline(_ k: Int) {
        let n = Int(inlineCount)
        withInline { w in
            for i in 0..<(n - k) { w[i] = w[i + k] }
        }
        inlineCount = Int32(n - k)
    }

    @inline(__always)
    private mutating func withInline<R>(_ body: (UnsafeMutablePointer<BufferObservation>) -> R) -> R {
        withUnsafeMutablePointer(to: &inline) { tuple in
            tuple.withMemoryRebound(to: BufferObservation.self, capacity: Self.inlineCapacity) { body($0) }
        }
    }

    /// The array form of `insert`.
    private static func insert(_ observation: BufferObservation, into window: inout [BufferObservation], keepFrom oldest: Int64, capacity: Int) {
        // The usual case: the observation is the newest and is kept, so the entries to drop
        // are the same before and after adding it; it takes the place the first of them
        // leaves, with no growth and no second pass.
        let n = window.count
        if n > 0, observation.time >= oldest {
            let dropped = window.withUnsafeMutableBufferPointer { w -> Int in
                guard w[n - 1].time <= observation.time else { return -1 }
                var drop = 0
                while drop < n, w[drop].time < oldest { drop += 1 }
                if n + 1 - drop > capacity { drop = n + 1 - capacity }
                guard drop > 0 else { return 0 }
                for k in 0..<(n - drop) { w[k] = w[k + drop] }
                w[n - drop] = observation
                return drop
            }
            if dropped == 0 { window.append(observation) }
            if dropped >= 0 {
                for _ in 1..<Swift.max(dropped, 1) { window.removeLast() }
                return
            }
        }
        var i = window.count
        while i > 0, window[i - 1].time > observation.time { i -= 1 }
        // Appending and shifting by hand: `insert` and `removeFirst` take Array's general
        // (and here several times slower) replace-a-range path.
        if i == window.count { window.append(observation) } else { window.insert(observation, at: i) }
        var drop = 0
        while drop < window.count, window[drop].time < oldest { drop += 1 }
        if window.count - drop > capacity { drop = window.count - capacity }
        if drop > 0 {
            let kept = window.count - drop
            window.withUnsafeMutableBufferPointer { w in
                for k in 0..<kept { w[k] = w[k + drop] }
            }
            for _ in 0..<drop { window.removeLast() }  // one at a time: `removeLast(_:)` is the general path again
        }
    }
}

extension BufferObservation {
    /// What unused inline room holds.
    static let empty = BufferObservation(time: 0, position: 0, bufferLength: 0, objectClass: 0)
}
