import Foundation
import Logging
import MCP

/// The head of one JSON-RPC message: enough to route it (its id, its method, and the id a
/// `notifications/cancelled` names).
struct JSONRPCHead: Decodable, Sendable {
    var id: ID?
    var method: String?
    var params: Params?

    struct Params: Decodable, Sendable {
        var requestId: ID?
    }

    /// A request (method and id), a notification (method, no id) or a response (id, no method).
    enum Kind: Equatable { case request(ID), notification, response, invalid }

    var kind: Kind {
        switch (method, id) {
        case (.some, .some(let id)): .request(id)
        case (.some, .none): .notification
        case (.none, .some): .response
        case (.none, .none): .invalid
        }
    }

    /// Reads the head of `data`; nil if it is no JSON-RPC object (a batch is none either).
    static func read(_ data: Data) -> JSONRPCHead? {
        guard data.first(where: { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) }) == UInt8(ascii: "{") else { return nil }
        return try? JSONDecoder().decode(JSONRPCHead.self, from: data)
    }
}

/// The transport of one MCP session over HTTP: each POSTed request is handed to the session's
/// `Server` and its HTTP handler waits for the matching response, answered as one JSON body. A
/// request id already in flight in the session is refused (never overwritten), every wait ends
/// (answer, cancellation, deadline or close), and closing answers every waiter at once.
actor MCPSessionTransport: Transport {
    nonisolated let logger: Logger
    private let incoming: AsyncThrowingStream<Data, any Error>
    private let incomingContinuation: AsyncThrowingStream<Data, any Error>.Continuation
    private var waiters: [ID: Waiter] = [:]
    private var closed = false
    /// The client's GET stream, where the server's notifications go (none: they are dropped).
    private var stream: AsyncStream<Data>.Continuation?

    private struct Waiter {
        var continuation: CheckedContinuation<Outcome, Never>
        var deadline: Task<Void, Never>
    }

    /// How a request's wait ended.
    enum Outcome: Sendable, Equatable {
        case answered(Data)
        /// Another request with this id is in flight in the session.
        case duplicate
        /// The client cancelled it (`notifications/cancelled`) or went away.
        case cancelled
        /// No answer within the deadline.
        case timedOut
        /// The session closed (ended, expired, shutdown).
        case closed
    }

    init(logger: Logger) {
        self.logger = logger
        (incoming, incomingContinuation) = AsyncThrowingStream<Data, any Error>.makeStream()
    }

    func connect() async throws {}

    func disconnect() async { close() }

    /// The server's outgoing messages: a response goes to the handler waiting for its id;
    /// notifications go to the client's GET stream when it has one (at most 100 waiting; they
    /// are dropped without one).
    func send(_ data: Data) async throws {
        guard let head = JSONRPCHead.read(data) else { return }
        if head.kind == .response, let id = head.id {
            finish(id, .answered(data))
        } else if head.kind == .notification {
            stream?.yield(data)
        }
    }

    /// A new stream for the server's notifications, replacing the previous one (which ends).
    func attachStream() -> AsyncStream<Data> {
        stream?.finish()
        let (messages, continuation) = AsyncStream<Data>.makeStream(bufferingPolicy: .bufferingNewest(100))
        if closed { continuation.finish() } else { stream = continuation }
        return messages
    }

    func receive() -> AsyncThrowingStream<Data, any Error> { incoming }

    /// Hands request `body` (id `id`) to the server and waits for its answer, at most `deadline`.
    func exchange(_ body: Data, id: ID, deadline: Duration) async -> Outcome {
        guard !closed else { return .closed }
        guard waiters[id] == nil else { return .duplicate }
        if Task.isCancelled { return .cancelled }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let timer = Task { [weak self] in
                    try? await Task.sleep(for: deadline)
                    if !Task.isCancelled { await self?.finish(id, .timedOut) }
                }
                waiters[id] = Waiter(continuation: continuation, deadline: timer)
                incomingContinuation.yield(body)
            }
        } onCancel: {
            Task { await self.finish(id, .cancelled) }
        }
    }

    /// Hands a notification or a response of the client to the server. A cancellation ends the
    /// wait of the request it names.
    func deliver(_ body: Data, head: JSONRPCHead) {
        guard !closed else { return }
        incomingContinuation.yield(body)
        if head.method == "notifications/cancelled", let id = head.params?.requestId { finish(id, .cancelled) }
    }

    /// Ends every wait and the server's message stream.
    func close() {
        guard !closed else { return }
        closed = true
        for id in Array(waiters.keys) { finish(id, .closed) }
        incomingContinuation.finish()
        stream?.finish()
        stream = nil
    }

    private func finish(_ id: ID, _ outcome: Outcome) {
        guard let waiter = waiters.removeValue(forKey: id) else { return }
        waiter.deadline.cancel()
        waiter.continuation.resume(returning: outcome)
    }
}
