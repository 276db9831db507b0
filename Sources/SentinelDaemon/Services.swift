import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// The daemon as a ServiceLifecycle service. Its blocking consume loop runs on a thread of
/// its own (librdkafka blocks; Swift's cooperative pool must not), and a graceful shutdown
/// (SIGTERM/SIGINT through the service group) or cancellation asks it to stop; it then
/// finishes the record in hand, flushes, commits and closes before `run` returns.
// Unchecked: it hands the daemon to the one thread that runs it, and shares only `stop`.
public final class DaemonService: Service, @unchecked Sendable {
    private let daemon: Daemon
    private let stop = StopFlag()

    public init(daemon: Daemon) { self.daemon = daemon }

    public func run() async throws {
        let stop = self.stop
        let daemon = self.daemon
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                    let thread = Thread {
                        do {
                            try daemon.run(shouldStop: { stop.isSet })
                            continuation.resume()
                        } catch {
                            continuation.resume(throwing: error)
                        }
                    }
                    thread.name = "cmcd-sentinel-consumer"
                    thread.start()
                }
            } onGracefulShutdown: {
                stop.set()
            }
        } onCancel: {
            stop.set()
        }
    }
}

/// A flag set from any thread, read by the consume loop.
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
