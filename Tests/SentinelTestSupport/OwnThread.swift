import SentinelDaemon
import Synchronization
import Testing

/// Runs each test on a thread of its own instead of a thread of Swift's cooperative pool.
///
/// For tests that block: they wait for child processes, read their pipes, sleep between
/// polls. The pool has only as many threads as cores (two here), so a blocking test on it
/// starves every test beside it that needs the pool, and their time limits fail at random
/// when tests run in parallel. Under this trait the test's synchronous code (and its
/// nonisolated async code) runs on the test's thread, through a task executor preference.
public struct OwnThread: TestTrait, SuiteTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        // A suite's scope only encloses its tests: each test case gets the thread.
        guard testCase != nil else { return try await function() }
        let executor = ThreadExecutor.take()
        defer { ThreadExecutor.give(executor) }
        try await withTaskExecutorPreference(executor) { try await function() }
    }
}

extension Trait where Self == OwnThread {
    /// Each test on a thread of its own, off Swift's cooperative pool (for tests that block).
    public static var ownThread: Self { OwnThread() }
}

/// The threads tests run on: each test takes one no other running test holds. They are kept
/// for the process's life, so a task a test left behind (it inherits the preference) still
/// runs after the test.
enum ThreadExecutor {
    private static let idle = Mutex<[DedicatedThreadExecutor]>([])

    static func take() -> DedicatedThreadExecutor { idle.withLock { $0.popLast() } ?? DedicatedThreadExecutor() }
    static func give(_ executor: DedicatedThreadExecutor) { idle.withLock { $0.append(executor) } }
}
