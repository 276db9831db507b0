import Foundation

/// Where tests put their files (databases, configurations, line files, servers' logs): one
/// directory per test process, removed when the process exits, so that runs leave nothing in
/// the temporary directory. Directories left by test processes that died are removed on first
/// use.
public enum TestScratch {
    static let prefix = "cmcd-sentinel-tests-"

    /// This process's directory (made on first use).
    public static let directory: URL = {
        let temporary = FileManager.default.temporaryDirectory
        for name in (try? FileManager.default.contentsOfDirectory(atPath: temporary.path)) ?? [] where name.hasPrefix(prefix) {
            guard let pid = Int32(name.dropFirst(prefix.count)), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            try? FileManager.default.removeItem(at: temporary.appendingPathComponent(name))
        }
        let directory = temporary.appendingPathComponent("\(prefix)\(getpid())")
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(at: TestScratch.directory) }
        return directory
    }()
}
