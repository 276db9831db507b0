import ArgumentParser
import CMCDDetection
import SentinelYAML

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `cmcd-sentinel rules`: work with rules files.
struct RulesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rules",
        abstract: "Work with detection rules files.",
        subcommands: [Check.self])

    /// `cmcd-sentinel rules check [PATH]`.
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a rules file; on success print a summary of the rules in force.")

        @Argument(help: "The rules file.")
        var path: String = RulesFile.defaultPath

        func run() throws {
            let rules = try RulesFile.load(path)
            print("\(path): OK")
            for line in RulesFile.summary(rules) { print("  " + line) }
        }
    }
}

/// Loading rules files for the commands.
enum RulesFile {
    static let defaultPath = "rules/default.yaml"

    /// Loads and validates a rules file; problems become exit-2 failures naming file and key.
    static func load(_ path: String) throws -> DetectionRules {
        let text: String
        do { text = try readFile(path, limit: 4 * 1024 * 1024) } catch let failure as CommandFailure {
            throw CommandFailure.usage(failure.message)
        }
        do {
            return try DetectionRules.parse(yaml: text, file: path)
        } catch {
            throw CommandFailure.usage(error.description)
        }
    }

    static func summary(_ r: DetectionRules) -> [String] {
        func on(_ b: Bool) -> String { b ? "on" : "off" }
        var lines = [
            "buffer_drop (\(on(r.bufferDrop.enabled))): lookback \(r.bufferDrop.lookbackMs) ms, reference >= \(r.bufferDrop.minReferenceMs) ms, warning >= \(Int((r.bufferDrop.warningDropRatio * 100).rounded()))%, critical >= \(Int((r.bufferDrop.criticalDropRatio * 100).rounded()))%, object types \(r.bufferDrop.objectTypes.map(\.rawValue).sorted().joined(separator: ",")), live reference >= \(r.bufferDrop.liveMinReferenceMs) ms",
            "buffer_starvation (\(on(r.bufferStarvation.enabled))): low buffer < \(r.bufferStarvation.lowBufferMs) ms, recovered > \(r.bufferStarvation.recoveredBufferMs) ms, live low < \(Int((r.bufferStarvation.liveLowBufferRatio * 100).rounded()))% of the usual buffer",
            "startup_delay (\(on(r.startupDelay.enabled))): warning > \(r.startupDelay.warningMs) ms, critical/stuck > \(r.startupDelay.criticalMs) ms",
            "slow_seek (\(on(r.slowSeek.enabled))): warning > \(r.slowSeek.warningMs) ms, critical/stuck > \(r.slowSeek.criticalMs) ms",
            "sessions: reorder tolerance \(r.sessions.reorderToleranceMs) ms, idle timeout \(r.sessions.idleTimeoutMs) ms, at most \(r.sessions.maxLiveSessions) live, pause after \(r.sessions.pauseGapMs) ms of silence",
        ]
        let c = r.cohorts
        if c.enabled {
            let groups = c.groups.map { "[" + $0.map(\.rawValue).joined(separator: ",") + "]" }.joined(separator: " ")
            lines.append("cohorts: \(groups), windows of \(c.windowMs) ms, judged from \(c.minSessions) sessions, at most \(c.maxCohorts) live")
            for rule in c.incidents {
                var test: [String] = []
                if let above = rule.above { test.append("> \(above)") }
                if let sigmas = rule.deviationSigmas { test.append("> baseline + \(sigmas) sigma") }
                lines.append(
                    "incident \(rule.name) (\(rule.severity.rawValue)): \(rule.metric.rawValue) \(test.joined(separator: " and ")) for \(rule.forMs) ms, resolved after \(rule.resolveAfterMs) ms clear")
            }
        } else {
            lines.append("cohorts: off")
        }
        for route in r.routes {
            var text = "route \(route.name) -> webhook \(route.webhook): "
            text += route.types.isEmpty ? "all types" : route.types.map(\.rawValue).sorted().joined(separator: ",")
            text += ", severity >= \(route.minSeverity.rawValue)"
            if let p = route.minDropPercent { text += ", drop >= \(p)%" }
            text += route.sendResolved ? ", with resolved" : ", firing only"
            if route.groupWaitMs > 0 { text += ", held \(route.groupWaitMs) ms" }
            if !route.groupBy.isEmpty { text += ", grouped by \(route.groupBy.map(\.rawValue).joined(separator: ","))" }
            if let interval = route.groupIntervalMs { text += ", group interval \(interval) ms" }
            if let limit = route.maxPerHour { text += ", at most \(limit) per hour" }
            lines.append(text)
        }
        return lines
    }
}

/// Reads a whole (small) file, failing clearly when it is missing or too large.
func readFile(_ path: String, limit: Int) throws -> String {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw CommandFailure.runtime("\(path): cannot open: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    return try readAll(fd: fd, name: path, limit: limit)
}

/// Reads a descriptor to its end, failing beyond `limit` bytes.
func readAll(fd: Int32, name: String, limit: Int) throws -> String {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw CommandFailure.runtime("\(name): cannot read: \(String(cString: strerror(errno)))")
        }
        if n == 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
        if bytes.count > limit { throw CommandFailure.runtime("\(name): larger than \(limit) bytes") }
    }
    return String(decoding: bytes, as: UTF8.self)
}
