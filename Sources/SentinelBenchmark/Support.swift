
import CMCDDetection
import CMCDRecords
import Foundation


#if canImport(Glibc)
import Glibc
#endif

func nowNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// The processor the figures were taken on, from /proc/cpuinfo ("unknown" elsewhere): the
/// model name alone does not tell the generations of a virtual machine's CPU apart, so its
/// family and model numbers come with it.
func processorDescription() -> String {
    guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown" }
    var fields: [String: String] = [:]
    for line in info.split(separator: "\n") {
        guard let colon = line.firstIndex(of: ":") else { continue }
        let key = line[..<colon].trimmingCharacters(in: .whitespaces)
        if fields[key] == nil { fields[key] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces) }
    }
    let cores = sysconf(Int32(_SC_NPROCESSORS_ONLN))
    return "\(fields["model name"] ?? "unknown") (family \(fields["cpu family"] ?? "?"), model \(fields["model"] ?? "?")), \(cores) cores online"
}

/// Resident set size from /proc/self/statm (second field, in pages).
func residentBytes() -> Int {
    let fd = open("/proc/self/statm", O_RDONLY)
    guard fd >= 0 else { return 0 }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 256)
    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard n > 0 else { return 0 }
    let fields = String(decoding: buffer[0..<n], as: UTF8.self).split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// Deterministic pseudo-random numbers.
struct Random {
    var state: UInt64
    mutating func next(_ bound: UInt64) -> UInt64 {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return (state >> 33) % bound
    }
}

/// CloudFront real-time log lines (the default 10 fields) for `sessions` interleaved viewers,
/// shaped like the seed sample (hls.js, CMCD v1 in the query, a realistic header blob), in
/// event-time order. Each viewer requests a segment every 2 to 6 s (4 s on average), the
/// viewers' first requests spread over the first 4 s. As real players do, a viewer fetches its
/// first segment right after the manifest: 0.3 to 1.5 s later, and 2.5 to 6 s later for one
/// viewer in fifty (a slow startup).
struct LineGenerator {
    let sessions: Int
    var rng = Random(state: 1)
    var buffers: [Int]
    var segment: [Int]
    /// The viewers by when each next requests: a binary min-heap of (time in µs, viewer).
    var due: [(micros: Int, session: Int)]
    /// The viewer of the line `next` made last.
    private(set) var lastSession = 0
    let start = 1_720_015_600_000_000
    let headers = "Host:d1a2b3c4d5e6f7.cloudfront.net%0AUser-Agent:Mozilla/5.0%20(Macintosh;%20Intel%20Mac%20OS%20X%2010_15_7)%20AppleWebKit/537.36%20(KHTML,%20like%20Gecko)%20Chrome/126.0.0.0%20Safari/537.36%0AAccept:*/*%0AOrigin:https://d1a2b3c4d5e6f7.cloudfront.net%0A"

    init(sessions: Int) {
        self.sessions = sessions
        buffers = [Int](repeating: 0, count: sessions)
        segment = [Int](repeating: 0, count: sessions)
        // In viewer order, times rising: already a heap.
        let first = start
        due = (0..<sessions).map { (first + $0 * 4_000_000 / sessions, $0) }
    }

    /// The next line; `at` overrides its event time (epoch ms).
    mutating func next(at eventTime: Int? = nil) -> [UInt8] {
        let (micros, s) = due[0]
        lastSession = s
        let gap: Int
        if segment[s] == 0 {
            gap = rng.next(50) == 0 ? 2_500_000 + Int(rng.next(3_500_000)) : 300_000 + Int(rng.next(1_200_000))
        } else {
            gap = 2_000_000 + Int(rng.next(4_000_000))
        }
        rescheduleFirst(at: micros + gap)
        let time = eventTime ?? micros / 1000
        let sid = "session_\(String(s, radix: 36))_md91ykdl5yrcwq371f5"
        var cmcd: String
        if segment[s] == 0 {
            cmcd = "cid%3D%22video-content-demo%22%2Cot%3Dm%2Csf%3Dh%2Csid%3D%22\(sid)%22%2Csu"
        } else {
            // Mostly healthy buffers, with an occasional sudden drop or stall.
            let roll = rng.next(1000)
            if roll < 3 { buffers[s] = 0 } else if roll < 10 { buffers[s] /= 5 } else { buffers[s] = min(buffers[s] + 2000 + Int(rng.next(2000)), 30000) }
            let bl = buffers[s] / 100 * 100
            cmcd = "bl%3D\(bl)%2Cbr%3D5000%2Ccid%3D%22video-content-demo%22%2Cd%3D6000%2Cmtp%3D25400%2Cnor%3D%22master_1080p_\(segment[s] + 1).ts%22%2Cot%3Dav%2Csf%3Dh%2Csid%3D%22\(sid)%22%2Cst%3Dv%2Ctb%3D8500"
            if bl == 0 { cmcd += "%2Cbs%2Csu" }
        }
        segment[s] += 1
        let line = "\(time / 1000).\(String(time % 1000 + 1000).dropFirst())\t203.0.113.45\t200\tGET\t/videos/master_1080p_\(segment[s]).ts\tIAD89-P1\tk9Zq2W7xR4tY1uI8oP3aS6dF0gH5jK2lZ7xC4vB1nM8qW3eR6tYuIA==\t0.213\tCMCD=\(cmcd)\t\(headers)"
        return Array(line.utf8)
    }

    /// Moves the first viewer's turn to `micros` and restores the heap.
    private mutating func rescheduleFirst(at micros: Int) {
        due[0].micros = micros
        var i = 0
        while true {
            let left = 2 * i + 1
            guard left < due.count else { return }
            let child = left + 1 < due.count && due[left + 1].micros < due[left].micros ? left + 1 : left
            guard due[child].micros < due[i].micros else { return }
            due.swapAt(i, child)
            i = child
        }
    }
}

