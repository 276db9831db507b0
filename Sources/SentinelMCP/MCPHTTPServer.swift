import Foundation
import HTTPTypes
import Hummingbird
import Logging
import MCP
import NIOCore
import SentinelHTTP
import SentinelJSON
import ServiceLifecycle
import Synchronization

/// MCP over Streamable HTTP at `/mcp`, hosted in Hummingbird, for many clients at once: each
/// `initialize` opens an MCP session (its own `Server`, named by the `Mcp-Session-Id` header of
/// the answer), answered with JSON bodies. Sessions are bounded (`mcp.max_sessions`; more get 503
/// with Retry-After), expire when idle (`mcp.idle_timeout_ms`; then 404, and the client
/// initializes again), end on DELETE, and all close at once on SIGTERM so that shutdown never
/// waits for a tool. Every request needs `Authorization: Bearer <mcp.token>`; the SDK's Host and
/// Origin checks guard against DNS rebinding when the server listens on a loopback address.
public enum MCPHTTPServer {
    /// Most bytes of one request body.
    static let maxBody = 4 << 20
    /// Longest wait for a tool's answer.
    static let requestDeadline = Duration.seconds(300)

    /// Where and how to serve.
    public struct Options: Sendable {
        public var host: String
        public var port: Int
        /// Bearer tokens by name (the name is the caller's in the tools).
        public var tokens: [String: String]
        /// Requests one token may make in a minute (429 with Retry-After beyond).
        public var rateLimitPerMinute: Int
        /// Named in the protected resource metadata document.
        public var authorizationServers: [String]
        public var maxSessions: Int
        public var idleTimeoutMs: Int64
        /// Browser origins and Host values allowed besides the loopback ones (see `AllowList`).
        public var allowedOrigins: [String]
        public var allowedHosts: [String]

        public init(
            host: String, port: Int, tokens: [String: String], maxSessions: Int = 64, idleTimeoutMs: Int64 = 1_800_000,
            allowedOrigins: [String] = [], allowedHosts: [String] = [], rateLimitPerMinute: Int = 600, authorizationServers: [String] = []
        ) {
            self.host = host
            self.port = port
            self.tokens = tokens
            self.rateLimitPerMinute = rateLimitPerMinute
            self.authorizationServers = authorizationServers
            self.maxSessions = maxSessions
            self.idleTimeoutMs = idleTimeoutMs
            self.allowedOrigins = allowedOrigins
            self.allowedHosts = allowedHosts
        }
    }

    /// The HTTP server and its sessions as a group that serves until the graceful shutdown of
    /// the group that runs it.
    public static func services(tools: SentinelTools, version: String, options: Options, logger: Logger) -> ServiceGroup {
        let loopback = ["127.0.0.1", "localhost", "::1", "[::1]"].contains(options.host)
        if !loopback, options.allowedOrigins.isEmpty {
            logger.warning(
                "MCP over HTTP on \(options.host) without mcp.allowed_origins: any browser origin is accepted, so pages on other sites can reach it with a stolen token; set mcp.allowed_origins, or listen on 127.0.0.1")
        }
        let validation = StandardValidationPipeline(validators: [
            AllowList(loopbackPort: loopback ? options.port : nil, origins: options.allowedOrigins, hosts: options.allowedHosts),
            AcceptHeaderValidator(mode: .jsonOnly), ContentTypeValidator(), ProtocolVersionValidator(),
        ])
        let sessions = MCPSessions(
            capacity: options.maxSessions, idleTimeoutMs: options.idleTimeoutMs, logger: logger,
            open: { caller in await SentinelMCPServer.make(tools: tools.forCaller(caller), version: version) })
        let tokens = NamedTokens(options.tokens)
        let limiter = Mutex(RateLimiter(perMinute: options.rateLimitPerMinute))
        let router = Router()
        router.on("/mcp", method: .post) { request, _ -> Response in
            guard let caller = tokens.name(for: request.headers[.authorization]) else { return unauthorized(request) }
            if let retryAfter = limiter.withLock({ $0.admit(caller, nowMs: MCPSessions.nowMs) }) {
                return Response(
                    status: .tooManyRequests, headers: [.retryAfter: String(retryAfter), .contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(string: #"{"error":"too many requests for this token (mcp.rate_limit_per_minute)"}"#)))
            }
            let body: ByteBuffer
            do { body = try await request.body.collect(upTo: maxBody) } catch {
                return Response(
                    status: .contentTooLarge, headers: [.contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(string: #"{"error":"the body is larger than 4 MiB"}"#)))
            }
            let mcpRequest = Self.mcpRequest(request, method: "POST", body: Data(buffer: body))
            return await sessions.post(mcpRequest, caller: caller, validation: validation).response
        }
        // RFC 9728: where a client learns how to get a token for this resource (no token needed).
        for path in ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"] {
            router.on(RouterPath(path), method: .get) { request, _ -> Response in
                let metadata = OAuthProtectedResourceServerMetadata(
                    resource: resourceURL(request, options), authorizationServers: options.authorizationServers.compactMap(URL.init(string:)),
                    scopesSupported: [])
                let encoder = JSONEncoder()
                encoder.outputFormatting = .sortedKeys
                var document = (try? encoder.encode(metadata)) ?? Data("{}".utf8)
                // bearer_methods_supported (RFC 9728 2): tokens go in the Authorization header only.
                if let object = try? JSONSerialization.jsonObject(with: document) as? [String: Any] {
                    var extended = object
                    extended["bearer_methods_supported"] = ["header"]
                    extended["resource_name"] = "CMCD Sentinel"
                    document = (try? JSONSerialization.data(withJSONObject: extended, options: [.sortedKeys])) ?? document
                }
                return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: document)))
            }
        }
        router.on("/mcp", method: .delete) { request, _ -> Response in
            guard tokens.name(for: request.headers[.authorization]) != nil else { return unauthorized(request) }
            let mcpRequest = Self.mcpRequest(request, method: "DELETE", body: nil)
            if let refused = validation.validate(mcpRequest, context: HTTPValidationContext(httpMethod: "DELETE")) {
                return MCPAnswer(refused).response
            }
            return await sessions.delete(mcpRequest.header(HTTPHeaderName.sessionID)).response
        }
        router.on("/mcp", method: .get) { request, _ -> Response in
            // The session's stream of server messages (resource updates), as server-sent events.
            guard let caller = tokens.name(for: request.headers[.authorization]) else { return unauthorized(request) }
            let mcpRequest = Self.mcpRequest(request, method: "GET", body: nil)
            if let refused = validation.validate(mcpRequest, context: HTTPValidationContext(httpMethod: "GET")) {
                return MCPAnswer(refused).response
            }
            guard request.headers[.accept]?.contains("text/event-stream") == true else {
                return Response(status: .notAcceptable, headers: [.contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(string: #"{"error":"GET /mcp is a text/event-stream"}"#)))
            }
            return await sessions.stream(mcpRequest.header(HTTPHeaderName.sessionID), caller: caller)
        }
        for method in [HTTPTypes.HTTPRequest.Method.put, .patch] {
            router.on("/mcp", method: method) { _, _ -> Response in
                Response(status: .methodNotAllowed, headers: [.allow: "GET, POST, DELETE"])
            }
        }
        let app = Application(
            router: router, configuration: .init(address: .hostname(options.host, port: options.port)),
            onServerRunning: { [options] channel in
                // The address really bound (port 0 in the configuration: any free port).
                logger.info(
                    "MCP over Streamable HTTP on \(channel.localAddress?.description ?? "\(options.host):\(options.port)") at /mcp (at most \(options.maxSessions) sessions, idle timeout \(options.idleTimeoutMs) ms)"
                )
            }, logger: logger)
        // The sessions service is last, so it shuts down first: every waiting request is
        // answered before the HTTP server waits for its requests to finish.
        var configuration = ServiceGroupConfiguration(
            services: [.init(service: app), .init(service: MCPSessionsService(sessions: sessions))], logger: logger)
        configuration.maximumGracefulShutdownDuration = .seconds(8)
        return ServiceGroup(configuration: configuration)
    }

    /// 401 with the challenge that points at the protected resource metadata.
    static func unauthorized(_ request: Request) -> Response {
        let metadata = origin(request) + "/.well-known/oauth-protected-resource"
        return Response(
            status: .unauthorized, headers: [.wwwAuthenticate: "Bearer resource_metadata=\"\(metadata)\"", .contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: #"{"error":"a valid bearer token is required"}"#)))
    }

    /// `http://host:port` as the client addressed this server (the Host is checked by the
    /// allow-list on /mcp; here only characters of a host name and port are kept).
    static func origin(_ request: Request) -> String {
        let host = (request.head.authority ?? "localhost").unicodeScalars.filter {
            CharacterSet.alphanumerics.contains($0) || ".-:[]".unicodeScalars.contains($0)
        }
        return "http://" + String(String.UnicodeScalarView(host.prefix(255)))
    }

    static func resourceURL(_ request: Request, _ options: Options) -> String { origin(request) + "/mcp" }

    /// The SDK's view of a Hummingbird request (for its validators).
    static func mcpRequest(_ request: Request, method: String, body: Data?) -> MCP.HTTPRequest {
        var headers: [String: String] = [:]
        for field in request.headers { headers[field.name.canonicalName] = field.value }
        // Hummingbird keeps the Host in :authority; the SDK's Host check reads the header.
        if let authority = request.head.authority { headers["Host"] = authority }
        return MCP.HTTPRequest(method: method, headers: headers, body: body, path: "/mcp")
    }
}

/// One answer of the MCP endpoint, before it becomes a Hummingbird response.
struct MCPAnswer: Sendable {
    var status: Int
    var headers: [String: String] = [:]
    var body: Data?

    init(status: Int, headers: [String: String] = [:], body: Data? = nil) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The SDK's answer (a validator's refusal).
    init(_ response: MCP.HTTPResponse) {
        self.init(status: response.statusCode, headers: response.headers, body: response.bodyData)
    }

    var response: Response {
        var fields = HTTPFields()
        for (name, value) in headers {
            if let field = HTTPField.Name(name) { fields[field] = value }
        }
        let status = HTTPResponse.Status(code: status)
        guard let body else { return Response(status: status, headers: fields) }
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// A JSON-RPC error answer for request `id` (null if unknown).
    static func error(_ status: Int, code: Int, _ message: String, id: ID? = nil, headers: [String: String] = [:]) -> MCPAnswer {
        var text = #"{"jsonrpc":"2.0","id":"#
        switch id {
        case .string(let s)?: JSONWriter.writeString(s, into: &text)
        case .number(let n)?: text += String(n)
        case nil: text += "null"
        }
        text += #","error":{"code":\#(code),"message":"#
        JSONWriter.writeString(message, into: &text)
        text += "}}"
        return MCPAnswer(status: status, headers: headers.merging(["Content-Type": "application/json"]) { a, _ in a }, body: Data(text.utf8))
    }
}

/// The open MCP sessions of the HTTP server: their table (`MCPSessionTable`) and the servers.
actor MCPSessions {
    /// One session: its server and transport.
    final class Session: Sendable {
        let id: String
        let server: Server
        let transport: MCPSessionTransport
        let watcher: ResourceWatcher
        /// The name of the token that opened it.
        let caller: String

        init(id: String, server: Server, transport: MCPSessionTransport, watcher: ResourceWatcher, caller: String) {
            self.caller = caller
            self.watcher = watcher
            self.id = id
            self.server = server
            self.transport = transport
        }

        func close() async {
            await watcher.stop()
            await transport.close()
            await server.stop()
        }
    }

    private var table: MCPSessionTable<Session>
    private let logger: Logger
    private let open: @Sendable (String) async -> (Server, ResourceWatcher)
    private var shutDown = false

    init(capacity: Int, idleTimeoutMs: Int64, logger: Logger, open: @escaping @Sendable (String) async -> (Server, ResourceWatcher)) {
        table = MCPSessionTable(capacity: capacity, idleTimeoutMs: idleTimeoutMs)
        self.logger = logger
        self.open = open
    }

    static var nowMs: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// Answers one POST: opens a session for `initialize`, else routes to the caller's session.
    func post(_ request: MCP.HTTPRequest, caller: String, validation: StandardValidationPipeline) async -> MCPAnswer {
        guard let body = request.body, !body.isEmpty else { return .error(400, code: -32700, "Parse error: empty body") }
        guard let head = JSONRPCHead.read(body) else {
            return .error(400, code: -32700, "Parse error: not one JSON-RPC message (batches are not supported)")
        }
        let initialize = head.method == "initialize"
        if let refused = validation.validate(request, context: HTTPValidationContext(httpMethod: "POST", isInitializationRequest: initialize)) {
            return MCPAnswer(refused)
        }
        let sessionID = request.header(HTTPHeaderName.sessionID)
        if initialize {
            guard case .request(let id) = head.kind else { return .error(400, code: -32600, "Invalid Request: initialize needs an id") }
            guard sessionID == nil else {
                return .error(400, code: -32600, "Invalid Request: initialize starts a new session; send it without Mcp-Session-Id", id: id)
            }
            return await initializeSession(body, id: id, caller: caller)
        }
        guard let sessionID else {
            return .error(400, code: -32600, "Bad Request: Mcp-Session-Id header is required (initialize first)", id: head.id)
        }
        // A session belongs to the token that opened it: another token does not find it.
        guard !shutDown, let session = table.begin(sessionID, nowMs: Self.nowMs) else {
            return .error(404, code: -32001, "Not Found: unknown or expired session; initialize again", id: head.id)
        }
        guard session.caller == caller else {
            table.end(sessionID, nowMs: Self.nowMs)
            return .error(404, code: -32001, "Not Found: unknown or expired session; initialize again", id: head.id)
        }
        defer { table.end(sessionID, nowMs: Self.nowMs) }
        switch head.kind {
        case .request(let id):
            let outcome = await session.transport.exchange(body, id: id, deadline: MCPHTTPServer.requestDeadline)
            return Self.answer(outcome, id: id, session: sessionID)
        case .notification, .response:
            await session.transport.deliver(body, head: head)
            return MCPAnswer(status: 202, headers: [HTTPHeaderName.sessionID: sessionID])
        case .invalid:
            return .error(400, code: -32600, "Invalid Request: neither a request, a notification nor a response")
        }
    }

    private func initializeSession(_ body: Data, id: ID, caller: String) async -> MCPAnswer {
        guard !shutDown else { return .error(503, code: -32000, "shutting down", id: id) }
        let sessionID = UUID().uuidString.lowercased()
        let transport = MCPSessionTransport(logger: logger)
        let (server, watcher) = await open(caller)
        let session = Session(id: sessionID, server: server, transport: transport, watcher: watcher, caller: caller)
        let (admission, expired) = table.admit(sessionID, handle: session, nowMs: Self.nowMs)
        await close(expired, reason: "idle")
        if case .full(let retryAfterMs) = admission {
            logger.warning("MCP: refused a new session, \(table.count) are open (mcp.max_sessions)")
            return .error(
                503, code: -32000, "Service Unavailable: too many MCP sessions; retry later", id: id,
                headers: ["Retry-After": String((retryAfterMs + 999) / 1000)])
        }
        do {
            try await server.start(transport: transport)
        } catch {
            _ = table.remove(sessionID)
            return .error(500, code: -32603, "could not start a session: \(error)", id: id)
        }
        let outcome = await transport.exchange(body, id: id, deadline: MCPHTTPServer.requestDeadline)
        table.end(sessionID, nowMs: Self.nowMs)
        guard case .answered(let data) = outcome, (JSONRPCHeadError.read(data)?.error) == nil else {
            // A refused initialize (say, an unsupported version) leaves no session behind.
            if let session = table.remove(sessionID) { await session.close() }
            return Self.answer(outcome, id: id, session: nil)
        }
        logger.info("MCP session \(sessionID) opened (\(table.count) of \(table.capacity))")
        return MCPAnswer(status: 200, headers: ["Content-Type": "application/json", HTTPHeaderName.sessionID: sessionID], body: data)
    }

    /// The server-sent event stream of session `sessionID` (GET): its server's notifications
    /// until the session closes or the client goes away. A new GET replaces the previous stream.
    func stream(_ sessionID: String?, caller: String) async -> Response {
        guard let sessionID else { return MCPAnswer.error(400, code: -32600, "Bad Request: Mcp-Session-Id header is required").response }
        guard !shutDown, let session = table.begin(sessionID, nowMs: Self.nowMs) else {
            return MCPAnswer.error(404, code: -32001, "Not Found: unknown or expired session; initialize again").response
        }
        table.end(sessionID, nowMs: Self.nowMs)
        guard session.caller == caller else {
            return MCPAnswer.error(404, code: -32001, "Not Found: unknown or expired session; initialize again").response
        }
        let messages = await session.transport.attachStream()
        let events = messages.map { data -> ByteBuffer in
            var buffer = ByteBuffer(string: "event: message\ndata: ")
            buffer.writeBytes(data)
            buffer.writeString("\n\n")
            return buffer
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", HTTPField.Name(HTTPHeaderName.sessionID)!: sessionID],
            body: .init(asyncSequence: events))
    }

    /// Ends session `sessionID` (DELETE).
    func delete(_ sessionID: String?) async -> MCPAnswer {
        guard let sessionID else { return .error(400, code: -32600, "Bad Request: Mcp-Session-Id header is required") }
        guard let session = table.remove(sessionID) else {
            return .error(404, code: -32001, "Not Found: unknown or expired session")
        }
        await session.close()
        logger.info("MCP session \(sessionID) ended by its client (\(table.count) open)")
        return MCPAnswer(status: 200, headers: [HTTPHeaderName.sessionID: sessionID])
    }

    /// Closes the sessions idle for the timeout.
    func expireIdle() async {
        await close(table.expire(nowMs: Self.nowMs), reason: "idle")
    }

    /// Closes every session and refuses new ones (shutdown).
    func closeAll() async {
        shutDown = true
        await close(table.removeAll(), reason: "shutdown")
    }

    private func close(_ sessions: [Session], reason: String) async {
        for session in sessions {
            await session.close()
            logger.info("MCP session \(session.id) closed (\(reason))")
        }
    }

    static func answer(_ outcome: MCPSessionTransport.Outcome, id: ID, session: String?) -> MCPAnswer {
        let headers = session.map { [HTTPHeaderName.sessionID: $0] } ?? [:]
        switch outcome {
        case .answered(let data):
            return MCPAnswer(status: 200, headers: headers.merging(["Content-Type": "application/json"]) { a, _ in a }, body: data)
        case .duplicate:
            return .error(409, code: -32600, "Conflict: a request with this id is already in flight in this session", id: id, headers: headers)
        case .cancelled:
            return .error(409, code: -32800, "Request cancelled", id: id, headers: headers)
        case .timedOut:
            return .error(504, code: -32603, "No answer within \(MCPHTTPServer.requestDeadline)", id: id, headers: headers)
        case .closed:
            return .error(503, code: -32000, "Session closed (server shutting down)", id: id, headers: headers)
        }
    }
}

/// Whether a JSON-RPC answer is an error.
struct JSONRPCHeadError: Decodable {
    var error: ErrorBody?
    struct ErrorBody: Decodable { var code: Int? }

    static func read(_ data: Data) -> JSONRPCHeadError? { try? JSONDecoder().decode(JSONRPCHeadError.self, from: data) }
}

/// Expires idle MCP sessions while the server runs; closes them all when it shuts down.
struct MCPSessionsService: Service {
    let sessions: MCPSessions

    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
            await sessions.expireIdle()
        }
        await sessions.closeAll()
    }
}

/// Which `Host` and browser `Origin` values may reach the server (DNS rebinding, cross-site
/// pages): on a loopback address the loopback names and origins on its port, plus those
/// configured; beyond loopback, the configured origins (any `Host` unless hosts are
/// configured). A request without an `Origin` (not a browser) passes the origin check.
/// Patterns are exact, or end in `:*` for any port.
struct AllowList: HTTPRequestValidator {
    let hosts: [String]?
    let origins: [String]?

    init(loopbackPort: Int?, origins: [String], hosts: [String]) {
        var allowedHosts = hosts
        var allowedOrigins = origins
        if let port = loopbackPort {
            // Port 0 is any free port, not known here: the loopback names on any port (a
            // rebinding page still cannot send a loopback Host).
            let portPattern = port == 0 ? "*" : "\(port)"
            for name in ["127.0.0.1", "localhost", "[::1]"] {
                allowedHosts.append("\(name):\(portPattern)")
                allowedOrigins.append("http://\(name):\(portPattern)")
            }
        }
        self.hosts = allowedHosts.isEmpty ? nil : allowedHosts
        self.origins = loopbackPort == nil && origins.isEmpty ? nil : allowedOrigins
    }

    func validate(_ request: MCP.HTTPRequest, context: HTTPValidationContext) -> MCP.HTTPResponse? {
        if let hosts, let host = request.header(HTTPHeaderName.host), !hosts.contains(where: { Self.matches(host, $0) }) {
            return .error(statusCode: 421, .invalidRequest("Misdirected Request: Host header not allowed"), sessionID: context.sessionID)
        }
        if let origins, let origin = request.header(HTTPHeaderName.origin), !origins.contains(where: { Self.matches(origin, $0) }) {
            return .error(statusCode: 403, .invalidRequest("Forbidden: Origin not allowed"), sessionID: context.sessionID)
        }
        return nil
    }

    static func matches(_ value: String, _ pattern: String) -> Bool {
        guard pattern.hasSuffix(":*") else { return value.lowercased() == pattern.lowercased() }
        let prefix = pattern.dropLast(2).lowercased() + ":"
        let lowered = value.lowercased()
        guard lowered.hasPrefix(prefix) else { return false }
        let port = lowered.dropFirst(prefix.count)
        return !port.isEmpty && port.allSatisfy(\.isNumber)
    }
}
