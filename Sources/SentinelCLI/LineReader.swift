import CMCDDetection
import SentinelJSON

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads LF-terminated lines from a file descriptor with a fixed buffer, so memory stays
/// constant whatever the input size. Lines longer than `maxLineBytes` are reported as
/// too long and skipped without being held in memory.
struct LineReader {
    enum Line {
        case line(UnsafeBufferPointer<UInt8>)
        case tooLong(bytes: Int)
    }

    struct ReadError: Error, CustomStringConvertible {
        let errno: Int32
        var description: String { "read failed: \(String(cString: strerror(errno)))" }
    }

    let fd: Int32
    let maxLineBytes: Int

    /// Calls `body` for every line (without its LF; a trailing CR is removed too).
    func forEachLine(_ body: (Line) -> Void) throws {
        if try forEachLineMapped(body) { return }
        let capacity = max(maxLineBytes + 1, 64 * 1024)
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
        defer { buffer.deallocate() }
        var filled = 0
        var discarding = false  // inside an over-long line, skipping to its end
        var discarded = 0
        func emit(_ start: Int, _ end: Int) {
            var e = end
            if e > start, buffer[e - 1] == 0x0D { e -= 1 }
            body(.line(UnsafeBufferPointer(start: buffer + start, count: e - start)))
        }
        while true {
            let n = read(fd, buffer + filled, capacity - filled)
            if n < 0 {
                if errno == EINTR { continue }
                throw ReadError(errno: errno)
            }
            let eof = n == 0
            let total = filled + n
            var start = 0
            var i = filled
            // memchr finds each newline with vector instructions, not a byte at a time.
            while i < total, let found = memchr(buffer + i, 0x0A, total - i) {
                i = buffer.distance(to: found.assumingMemoryBound(to: UInt8.self))
                if discarding {
                    body(.tooLong(bytes: discarded + i - start))
                    discarding = false
                    discarded = 0
                } else if i - start > maxLineBytes {
                    body(.tooLong(bytes: i - start))
                } else {
                    emit(start, i)
                }
                start = i + 1
                i += 1
            }
            let remaining = total - start
            if eof {
                if discarding {
                    body(.tooLong(bytes: discarded + remaining))
                } else if remaining > maxLineBytes {
                    body(.tooLong(bytes: remaining))
                } else if remaining > 0 {
                    emit(start, total)
                }
                return
            }
            if remaining > maxLineBytes || discarding {
                discarded += remaining
                discarding = true
                filled = 0
            } else {
                if start > 0, remaining > 0 { memmove(buffer, buffer + start, remaining) }
                filled = remaining
            }
        }
    }

    /// A regular file is read through a private read-only mapping: its lines are handed on
    /// where they lie, with no copy. False (nothing read) for pipes and empty files.
    private func forEachLineMapped(_ body: (Line) -> Void) throws -> Bool {
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_size > 0, lseek(fd, 0, SEEK_CUR) == 0 else { return false }
        let size = Int(info.st_size)
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else { return false }
        defer { munmap(mapped, size) }
        _ = madvise(mapped, size, MADV_SEQUENTIAL)
        let base = mapped.assumingMemoryBound(to: UInt8.self)
        func line(_ start: Int, _ end: Int) {
            if end - start > maxLineBytes {
                body(.tooLong(bytes: end - start))
                return
            }
            var e = end
            if e > start, base[e - 1] == 0x0D { e -= 1 }
            body(.line(UnsafeBufferPointer(start: base + start, count: e - start)))
        }
        var start = 0
        while start < size, let found = memchr(base + start, 0x0A, size - start) {
            let newline = base.distance(to: found.assumingMemoryBound(to: UInt8.self))
            line(start, newline)
            start = newline + 1
        }
        if start < size { line(start, size) }
        return true
    }
}

/// Buffered writes to a file descriptor (stdout by default).
final class OutputBuffer {
    private var bytes: [UInt8] = []
    private let fd: Int32
    private let flushAt = 64 * 1024

    init(fd: Int32 = 1) {
        self.fd = fd
        bytes.reserveCapacity(flushAt + 4096)
    }

    func writeLine(_ text: String) {
        bytes.append(contentsOf: text.utf8)
        bytes.append(0x0A)
        if bytes.count >= flushAt { flush() }
    }

    /// One JSON value as a line, written straight into the buffer.
    func writeLine(_ value: JSONValue) {
        JSONWriter.write(value, into: &bytes)
        bytes.append(0x0A)
        if bytes.count >= flushAt { flush() }
    }

    /// A finding's JSON as a line, written straight into the buffer.
    func writeLine(_ finding: Finding) {
        finding.writeJSON(into: &bytes)
        bytes.append(0x0A)
        if bytes.count >= flushAt { flush() }
    }

    /// Writes out what is buffered; false when the descriptor refused it.
    @discardableResult
    func flush() -> Bool {
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

/// Writes one line to standard error.
func printError(_ text: String) {
    var line = text
    line += "\n"
    line.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
            let n = write(2, bytes.baseAddress! + offset, bytes.count - offset)
            if n <= 0 {
                if n < 0, errno == EINTR { continue }
                return
            }
            offset += n
        }
    }
}
