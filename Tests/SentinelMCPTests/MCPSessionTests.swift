import Foundation
import Logging
import MCP
import Testing
@testable import SentinelMCP

/// The HTTP server's session policy and per-session transport, driven without a network.
struct MCPSessionTests {
    @Test func theTableIsBoundedAndSaysWhenToRetry() {
        var table = MCPSessionTable<Int>(capacity: 2, idleTimeoutMs: 1_000)
        #expect(table.admit("a", handle: 1, nowMs: 0).0.isAdmitted)
        table.end("a", nowMs: 0)
        #expect(table.admit("b", handle: 2, nowMs: 100).0.isAdmitted)
        table.end("b", nowMs: 100)
        let (full, expired) = table.admit("c", handle: 3, nowMs: 400)
        #expect(expired.isEmpty)
        guard case .full(let retryAfterMs) = full else {
            Issue.record("a third session fits in a table of two")
            return
        }
        #expect(retryAfterMs == 1_000, "at least a second, though 'a' expires in 600 ms")
        // Once 'a' is idle for the timeout, it makes room.
        let (admitted, gone) = table.admit("c", handle: 3, nowMs: 1_000)
        #expect(admitted.isAdmitted)
        #expect(gone == [1])
        #expect(table.begin("a", nowMs: 1_000) == nil)
    }

    @Test func aSessionWithARequestInFlightNeverExpires() {
        var table = MCPSessionTable<Int>(capacity: 4, idleTimeoutMs: 1_000)
        _ = table.admit("a", handle: 1, nowMs: 0)
        table.end("a", nowMs: 0)
        #expect(table.begin("a", nowMs: 500) == 1)
        #expect(table.expire(nowMs: 10_000).isEmpty, "a long tool call keeps its session")
        table.end("a", nowMs: 10_000)
        #expect(table.expire(nowMs: 10_999).isEmpty)
        #expect(table.expire(nowMs: 11_000) == [1])
        // Used just before its timeout, a session lives on; an expired one is unknown even before the sweep.
        _ = table.admit("b", handle: 2, nowMs: 0)
        table.end("b", nowMs: 0)
        #expect(table.begin("b", nowMs: 999) == 2)
        table.end("b", nowMs: 999)
        #expect(table.begin("b", nowMs: 1_999) == nil)
        #expect(table.remove("b") == 2)
        #expect(table.count == 0)
    }

    /// The defect of the SDK's stateless transport: a second request with an id in flight
    /// overwrote the first one's waiter, which then never answered.
    @Test(.timeLimit(.minutes(1))) func aDuplicateIdIsRefusedAndEveryWaitEnds() async throws {
        let transport = MCPSessionTransport(logger: Logger(label: "test"))
        let request = Data(#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.utf8)
        let first = Task { await transport.exchange(request, id: .number(1), deadline: .seconds(30)) }
        // The server sees the request before its answer is awaited.
        var received = await transport.receive().makeAsyncIterator()
        #expect(try await received.next() == request)
        #expect(await transport.exchange(request, id: .number(1), deadline: .seconds(30)) == .duplicate)
        let answer = Data(#"{"jsonrpc":"2.0","id":1,"result":{}}"#.utf8)
        try await transport.send(answer)
        #expect(await first.value == .answered(answer))
        // A string id "1" is another id; a notification from the server goes nowhere.
        try await transport.send(Data(#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#.utf8))
        let other = Task { await transport.exchange(request, id: .string("1"), deadline: .milliseconds(200)) }
        #expect(await other.value == .timedOut)
        // The client cancels; the session closes: each waiter is answered.
        let cancelled = Task { await transport.exchange(request, id: .number(2), deadline: .seconds(30)) }
        _ = try await received.next()
        _ = try await received.next()
        let cancel = Data(#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}"#.utf8)
        await transport.deliver(cancel, head: JSONRPCHead.read(cancel)!)
        #expect(await cancelled.value == .cancelled)
        let pending = Task { await transport.exchange(request, id: .number(3), deadline: .seconds(30)) }
        _ = try await received.next()
        _ = try await received.next()
        await transport.close()
        #expect(await pending.value == .closed)
        #expect(await transport.exchange(request, id: .number(4), deadline: .seconds(30)) == .closed)
        #expect(try await received.next() == nil, "closing ends the server's stream")
    }

    @Test func headsAreReadWithoutTrustingTheBody() {
        #expect(JSONRPCHead.read(Data(#"{"jsonrpc":"2.0","id":"x","method":"ping"}"#.utf8))?.kind == .request(.string("x")))
        #expect(JSONRPCHead.read(Data(#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.utf8))?.kind == .notification)
        #expect(JSONRPCHead.read(Data(#"{"jsonrpc":"2.0","id":3,"result":{}}"#.utf8))?.kind == .response)
        #expect(JSONRPCHead.read(Data(#"[{"jsonrpc":"2.0","id":3,"method":"ping"}]"#.utf8)) == nil, "no batches")
        #expect(JSONRPCHead.read(Data("not json".utf8)) == nil)
        #expect(JSONRPCHead.read(Data(#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#.utf8)) == nil)
    }
}

/// Which Host and Origin values reach the HTTP server.
struct AllowListTests {
    func status(_ list: AllowList, host: String?, origin: String?) -> Int? {
        var headers: [String: String] = [:]
        if let host { headers["Host"] = host }
        if let origin { headers["Origin"] = origin }
        return list.validate(MCP.HTTPRequest(method: "POST", headers: headers), context: HTTPValidationContext(httpMethod: "POST"))?.statusCode
    }

    @Test func loopbackAllowsItsOwnNamesAndTheConfiguredOrigins() {
        let list = AllowList(loopbackPort: 8765, origins: ["https://assistant.example"], hosts: [])
        #expect(status(list, host: "127.0.0.1:8765", origin: nil) == nil)
        #expect(status(list, host: "LOCALHOST:8765", origin: "http://localhost:8765") == nil)
        #expect(status(list, host: "evil.example:8765", origin: nil) == 421, "DNS rebinding")
        #expect(status(list, host: "127.0.0.1:8766", origin: nil) == 421)
        #expect(status(list, host: "127.0.0.1:8765", origin: "https://assistant.example") == nil)
        #expect(status(list, host: "127.0.0.1:8765", origin: "https://evil.example") == 403)
    }

    /// Listening on port 0 (any free port), the loopback names are allowed on any port, other
    /// names still not.
    @Test func onAnyFreeLoopbackPortTheLoopbackNamesOnAnyPort() {
        let list = AllowList(loopbackPort: 0, origins: [], hosts: [])
        #expect(status(list, host: "127.0.0.1:41234", origin: "http://localhost:41234") == nil)
        #expect(status(list, host: "evil.example:41234", origin: nil) == 421, "DNS rebinding")
        #expect(status(list, host: "127.0.0.1:41234", origin: "https://evil.example") == 403)
    }

    @Test func beyondLoopbackOnlyWhatIsConfigured() {
        let open = AllowList(loopbackPort: nil, origins: [], hosts: [])
        #expect(status(open, host: "anything:1", origin: "https://anything") == nil, "nothing configured: nothing checked (a warning at start)")
        let origins = AllowList(loopbackPort: nil, origins: ["https://a.example", "http://b.example:*"], hosts: [])
        #expect(status(origins, host: "mcp.internal:443", origin: nil) == nil)
        #expect(status(origins, host: nil, origin: "https://a.example") == nil)
        #expect(status(origins, host: nil, origin: "https://a.example:444") == 403, "an exact pattern is exact")
        #expect(status(origins, host: nil, origin: "http://b.example:8080") == nil)
        #expect(status(origins, host: nil, origin: "http://b.example:") == 403)
        #expect(status(origins, host: nil, origin: "http://b.example.evil:80") == 403)
        let hosts = AllowList(loopbackPort: nil, origins: [], hosts: ["mcp.example.com:*"])
        #expect(status(hosts, host: "mcp.example.com:443", origin: "https://whatever") == nil)
        #expect(status(hosts, host: "other.example.com:443", origin: nil) == 421)
    }
}

extension MCPSessionTable.Admission {
    var isAdmitted: Bool { if case .admitted = self { true } else { false } }
}
