/// Lines kept one after another in one buffer (not an array each), for handing a batch of
/// lines on and reading them back in order.
public struct PackedLines: Sendable {
    private(set) public var bytes: [UInt8] = []
    private var ends: [Int] = []
    public var count: Int { ends.count }

    public init() {}

    /// Room for `lines` lines of about `bytesEach` bytes.
    public mutating func reserve(lines: Int, bytesEach: Int) {
        bytes.reserveCapacity(lines * bytesEach)
        ends.reserveCapacity(lines)
    }

    public mutating func append(_ line: UnsafeBufferPointer<UInt8>) {
        bytes.append(contentsOf: line)
        ends.append(bytes.count)
    }

    public mutating func append(_ line: [UInt8]) {
        line.withUnsafeBufferPointer { append($0) }
    }

    /// Calls `body` with each line in order.
    public func forEach(_ body: (UnsafeBufferPointer<UInt8>) -> Void) {
        bytes.withUnsafeBufferPointer { all in
            var start = 0
            for end in ends {
                body(UnsafeBufferPointer(rebasing: all[start..<end]))
                start = end
            }
        }
    }
}
