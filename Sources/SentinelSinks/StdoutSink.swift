import CMCDDetection
import SentinelJSON
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Findings as JSON lines on standard output, written before offsets are committed.
public final class StdoutSink: FindingSink {
    public let name = "stdout"
    private let out: Mutex<OutputBuffer>

    /// `fd`: where the lines go (standard output unless a benchmark says otherwise).
    public init(fd: Int32 = 1) { out = Mutex(OutputBuffer(fd: fd)) }

    public struct WriteError: Error, CustomStringConvertible {
        public var description: String { "cannot write findings to standard output: \(String(cString: strerror(errno)))" }
    }

    public func write(_ findings: [Finding]) async throws {
        let written = out.withLock { out in
            for finding in findings { out.writeLine(finding) }
            return out.flush()
        }
        if !written { throw WriteError() }
    }

    public func flush() async throws {
        if !out.withLock({ $0.flush() }) { throw WriteError() }
    }
}

/// Buffered writes to a file descriptor (stdout by default).
public final class OutputBuffer {
    private var bytes: [UInt8] = []
    private let fd: Int32
    private let flushAt = 64 * 1024

    public init(fd: Int32 = 1) {
        self.fd = fd
        bytes.reserveCapacity(flushAt + 4096)
    }

    public func writeLine(_ text: String) {
        bytes.append(contentsOf: text.utf8)
        bytes.append(0x0A)
        if bytes.count >= flushAt { flush() }
    }

    /// One JSON value as a line, written straight into the buffer.
    public func writeLine(_ value: JSONValue) {
        JSONWriter.write(value, into: &bytes)
        bytes.append(0x0A)
        if bytes.count >= flushAt { flush() }
    }

    /// A finding's JSON as a line, written straight into the buffer.
    public func writeLine(_ finding: Finding) {
        finding.writeJSON(into: &bytes)
        bytes.append(0x0A)
        if bytes.count >= flushAt { flush() }
    }

    /// Writes out what is buffered; false when the descriptor refused it.
    @discardableResult
    public func flush() -> Bool {
        var offset = 0
        defer { bytes.removeAll(keepingCapacity: true) }
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += n
        }
        return true
    }

    deinit { flush() }
}
