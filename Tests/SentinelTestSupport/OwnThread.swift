import Foundation
import SentinelDaemon
import Synchronization
import Testing

/// Runs each test on a thread of its own instead of a thread of Swift's cooperative pool, with
/// at most a few such tests at a time.
///
/// For tests that block (they wait for child processes, read their pipes, sleep between
/// polls, call librdkafka) or compute for seconds (the behaviour suite, the randomised
/// agreement tests). The pool has only as many threads as cores (two here), so such a test on
/// it starves every test beside it that needs the pool (PostgreSQL's pool, HTTP clients), and
/// their time limits fail at random when tests run in parallel. On threads of their own they
/// still compete for the cores, and Swift Testing starts every test at once: so a test waits
/// (without holding a thread) until one of `ThreadExecutor.limit` places is free. Under this
/// trait the test's synchronous code (and its nonisolated async code) runs on the test's
/// thread, through a task executor preference.
public struct OwnThread: TestTrait, SuiteTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        // A suite's scope only encloses its tests: each test case gets the thread, once (a
        // test marked inside a marked suite is offered the scope twice).
        guard testCase != nil, ThreadExecutor.current == nil else { return try await function() }
        let executor = await ThreadExecutor.take()
        defer { ThreadExecutor.give(executor) }
        try await ThreadExecutor.$current.withValue(executor) {
            try await withTaskExecutorPreference(executor) { try await function() }
        }
    }
}

extension Trait where Self == OwnThread {
    /// Each test on a thread of its own, off Swift's cooperative pool (for tests that block or
    /// compute for seconds).
    public static var ownThread: Self { OwnThread() }
}

/// The threads tests run on: each test takes one no other running test holds, at most `limit`
/// at a time. They are kept for the process's life, so a task a test left behind (it inherits
/// the preference) still runs after the test.
enum ThreadExecutor {
    /// Tests on threads of their own at once: the cores, and as many again for tests that
    /// mostly wait for a child process.
    static let limit = 2 * max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// The executor of the test running in this task, if it has one.
    @TaskLocal static var current: DedicatedThreadExecutor?

    private struct State {
        var idle: [DedicatedThreadExecutor] = []
        var running = 0
        var waiting: [CheckedContinuation<Void, Never>] = []
    }

    private static let state = Mutex(State())

    static func take() async -> DedicatedThreadExecutor {
        // Admitted at once while a place is free; otherwise `give` hands its place over and
        // resumes this (`running` stays as it is).
        await withCheckedContinuation { continuation in
            let admitted = state.withLock { state -> Bool in
                guard state.running < limit else {
                    state.waiting.append(continuation)
                    return false
                }
                state.running += 1
                return true
            }
            if admitted { continuation.resume() }
        }
        return state.withLock { $0.idle.popLast() } ?? DedicatedThreadExecutor()
    }

    static func give(_ executor: DedicatedThreadExecutor) {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.idle.append(executor)
            guard !state.waiting.isEmpty else {
                state.running -= 1
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.resume()
    }
}
