import CMCD
import CMCDDetection
import SentinelJSON

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `read(2)`, under a name that `LineReader.read(upTo:_:)` does not hide.
private func readBytes(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int { read(fd, buffer, count) }

/// Reads LF-terminated lines from a file descriptor with a fixed buffer, so memory stays
/// constant whatever the input size. Lines longer than `maxLineBytes` are reported as
/// too long and skipped without being held in memory. A regular file is read through a
/// private read-only mapping instead, its lines handed on where they lie, with no copy.
///
/// Lines are pulled a number at a time (`read(upTo:_:)`), so a caller can stop between
/// groups of lines to hand work elsewhere; a line's bytes are valid only inside `body`.
final class LineReader {
    enum Line {
        case line(UnsafeBufferPointer<UInt8>)
        case tooLong(bytes: Int)
    }

    struct ReadError: Error, CustomStringConvertible {
        let errno: Int32
        var description: String { "read failed: \(String(cString: strerror(errno)))" }
    }

    private let fd: Int32
    private let maxLineBytes: Int
    /// The mapped file, or nil when reading through `buffer`.
    private var mapped: (base: UnsafePointer<UInt8>, size: Int)?
    private var buffer: UnsafeMutablePointer<UInt8>?
    private var capacity = 0
    /// Where the next line starts: in the mapping, or in `buffer`.
    private var start = 0
    /// Bytes held in `buffer`, and where the newline search resumes.
    private var filled = 0
    private var scanned = 0
    /// Inside an over-long line, skipping to its end (`discarded` bytes of it so far).
    private var discarding = false
    private var discarded = 0
    private var endOfInput = false
    private var finished = false

    init(fd: Int32, maxLineBytes: Int) {
        self.fd = fd
        self.maxLineBytes = maxLineBytes
        var info = stat()
        if fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_size > 0, lseek(fd, 0, SEEK_CUR) == 0,
            let base = mmap(nil, Int(info.st_size), PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED
        {
            _ = madvise(base, Int(info.st_size), MADV_SEQUENTIAL)
            mapped = (UnsafePointer(base.assumingMemoryBound(to: UInt8.self)), Int(info.st_size))
        } else {
            capacity = max(maxLineBytes + 1, 64 * 1024)
            buffer = .allocate(capacity: capacity)
        }
    }

    deinit {
        if let mapped { munmap(UnsafeMutableRawPointer(mutating: mapped.base), mapped.size) }
        buffer?.deallocate()
    }

    /// Calls `body` for every line (without its LF; a trailing CR is removed too).
    func forEachLine(_ body: (Line) -> Void) throws {
        while try read(upTo: Int.max, body) > 0 {}
    }

    /// Calls `body` for up to `limit` lines (an over-long line counts as one) and returns how
    /// many it handed on: 0 once the input is exhausted.
    func read(upTo limit: Int, _ body: (Line) -> Void) throws -> Int {
        if let mapped { return readMapped(mapped.base, mapped.size, limit, body) }
        guard let buffer, !finished else { return 0 }
        var count = 0
        func emit(_ end: Int) {
            if discarding {
                body(.tooLong(bytes: discarded + end - start))
                discarding = false
                discarded = 0
            } else if end - start > maxLineBytes {
                body(.tooLong(bytes: end - start))
            } else {
                var e = end
                if e > start, buffer[e - 1] == 0x0D { e -= 1 }
                body(.line(UnsafeBufferPointer(start: buffer + start, count: e - start)))
            }
            count += 1
        }
        while count < limit {
            if let newline = ByteSearch.first(0x0A, in: UnsafeBufferPointer(start: buffer, count: filled), from: scanned, to: filled) {
                emit(newline)
                start = newline + 1
                scanned = start
                continue
            }
            if endOfInput {
                if discarding || filled > start { emit(filled) }
                finished = true
                break
            }
            let remaining = filled - start
            if remaining > maxLineBytes || discarding {
                discarded += remaining
                discarding = true
                filled = 0
            } else {
                if start > 0, remaining > 0 { memmove(buffer, buffer + start, remaining) }
                filled = remaining
            }
            start = 0
            scanned = filled
            let n = readBytes(fd, buffer + filled, capacity - filled)
            if n < 0 {
                if errno == EINTR { continue }
                throw ReadError(errno: errno)
            }
            if n == 0 { endOfInput = true } else { filled += n }
        }
        return count
    }

    private func readMapped(_ base: UnsafePointer<UInt8>, _ size: Int, _ limit: Int, _ body: (Line) -> Void) -> Int {
        var count = 0
        while count < limit, start < size {
            let end = ByteSearch.first(0x0A, in: UnsafeBufferPointer(start: base, count: size), from: start, to: size) ?? size
            if end - start > maxLineBytes {
                body(.tooLong(bytes: end - start))
            } else {
                var e = end
                if e > start, base[e - 1] == 0x0D { e -= 1 }
                body(.line(UnsafeBufferPointer(start: base + start, count: e - start)))
            }
            start = end + 1
            count += 1
        }
        return count
    }
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
