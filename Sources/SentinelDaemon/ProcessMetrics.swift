import Foundation
import SentinelJSON

#if canImport(Glibc)
import Glibc
#endif

/// The standard Prometheus process metrics (`process_resident_memory_bytes`,
/// `process_cpu_seconds_total`, ...), read from `/proc/self` when `/metrics` is scraped, so
/// that an operator sees the daemon's memory stay bounded and its CPU use beside its own
/// counters. Empty where `/proc` is missing (not Linux).
enum ProcessMetrics {
    /// The metrics in the Prometheus text format, or "" when `/proc/self/stat` cannot be read.
    static func render() -> String {
        guard let stat = read("/proc/self/stat"), let fields = statFields(stat), fields.count > 21 else { return "" }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        guard ticks > 0, pageSize > 0 else { return "" }
        // Fields after the command name, counted from 0 = field 3 (`state`) of proc(5).
        let utime = Double(fields[11]) ?? 0
        let stime = Double(fields[12]) ?? 0
        let startTicks = Double(fields[19]) ?? 0
        let virtualBytes = Double(fields[20]) ?? 0
        let residentPages = Double(fields[21]) ?? 0
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ value: Double) {
            DaemonMetrics.append(name, type, help, [("", JSONWriter.formatDouble(value))], to: &out)
        }
        metric("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", (utime + stime) / ticks)
        metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", residentPages * pageSize)
        metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", virtualBytes)
        if let bootTime {
            metric("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", bootTime + startTicks / ticks)
        }
        if let open = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            // One of the entries is the directory being listed.
            metric("process_open_fds", "gauge", "Number of open file descriptors.", Double(max(open.count - 1, 0)))
        }
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            metric("process_max_fds", "gauge", "Maximum number of open file descriptors.", Double(limit.rlim_cur))
        }
        return out
    }

    /// The fields of `/proc/self/stat` after the command name (which is in parentheses and
    /// may hold spaces and parentheses itself).
    static func statFields(_ stat: String) -> [Substring]? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
    }

    /// When the machine booted (`btime` in `/proc/stat`), in seconds since the epoch: read
    /// once, not at every scrape.
    static let bootTime = bootTimeSeconds()

    static func bootTimeSeconds() -> Double? {
        guard let stat = read("/proc/stat") else { return nil }
        for line in stat.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst(6).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }

    private static func read(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }
}
