import NIOCore
import NIOPosix
import Synchronization

/// A task executor with a thread of its own, for code that makes blocking C calls (librdkafka's
/// poll and commit): a task that prefers it (`withTaskExecutorPreference`) runs its
/// synchronous parts there, never on Swift's cooperative pool. The thread is a one-thread
/// NIO event loop group, used for nothing else.
public final class DedicatedThreadExecutor: TaskExecutor {
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let loop: any EventLoop

    public init() { loop = group.next() }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    /// Stops the thread (once no task prefers the executor any more).
    public func shutdown() async { try? await group.shutdownGracefully() }
}

/// A flag set from any thread, read by the consume loop.
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
