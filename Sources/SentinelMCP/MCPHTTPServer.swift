import Foundation
import HTTPTypes
import Hummingbird
import Logging
import MCP
import NIOCore
import SentinelHTTP

/// MCP over Streamable HTTP (stateless, JSON responses) at `/mcp`, hosted in Hummingbird.
/// Every request needs `Authorization: Bearer <mcp.token>`; the SDK's Host and Origin checks
/// guard against DNS rebinding when the server listens on a loopback address.
public enum MCPHTTPServer {
    /// Most bytes of one request body.
    static let maxBody = 4 << 20

    /// Serves until a graceful shutdown (SIGTERM, SIGINT).
    public static func serve(tools: SentinelTools, version: String, host: String, port: Int, token: String, logger: Logger) async throws {
        let loopback = ["127.0.0.1", "localhost", "::1", "[::1]"].contains(host)
        if !loopback {
            // The SDK's Origin check only knows loopback origins; beyond loopback it is off.
            logger.warning(
                "MCP over HTTP on \(host): no Origin allow-list applies beyond loopback, so browsers on other sites can reach it with a stolen token; put it behind a proxy that checks Origin, or listen on 127.0.0.1")
        }
        let transport = StatelessHTTPServerTransport(
            validationPipeline: StandardValidationPipeline(validators: [
                loopback ? OriginValidator.localhost(port: port) : OriginValidator.disabled,
                AcceptHeaderValidator(mode: .jsonOnly), ContentTypeValidator(), ProtocolVersionValidator(),
            ]), logger: logger)
        let server = await SentinelMCPServer.make(tools: tools, version: version)
        try await server.start(transport: transport)
        let router = Router()
        router.on("/mcp", method: .post) { request, _ -> Response in
            guard Self.authorized(request.headers[.authorization], token: token) else {
                return Response(
                    status: .unauthorized, headers: [.wwwAuthenticate: "Bearer", .contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(string: #"{"error":"a valid bearer token is required"}"#)))
            }
            let body = try await request.body.collect(upTo: maxBody)
            var headers: [String: String] = [:]
            for field in request.headers { headers[field.name.canonicalName] = field.value }
            // Hummingbird keeps the Host in :authority; the SDK's Host check reads the header.
            if let authority = request.head.authority { headers["Host"] = authority }
            let answer = await transport.handleRequest(
                MCP.HTTPRequest(method: "POST", headers: headers, body: Data(buffer: body), path: "/mcp"))
            return Self.response(answer)
        }
        for method in [HTTPTypes.HTTPRequest.Method.get, .delete, .put] {
            router.on("/mcp", method: method) { _, _ -> Response in
                Response(status: .methodNotAllowed, headers: [.allow: "POST"])
            }
        }
        let app = Application(router: router, configuration: .init(address: .hostname(host, port: port)), logger: logger)
        logger.info("MCP over Streamable HTTP on http://\(host):\(port)/mcp")
        try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
        await server.stop()
    }

    /// The bearer token check (`BearerToken.matches`: any case of the scheme, constant time).
    static func authorized(_ header: String?, token: String) -> Bool { BearerToken.matches(header, token: token) }

    static func response(_ answer: MCP.HTTPResponse) -> Response {
        var headers = HTTPFields()
        for (name, value) in answer.headers {
            if let field = HTTPField.Name(name) { headers[field] = value }
        }
        let status = HTTPResponse.Status(code: answer.statusCode)
        guard let data = answer.bodyData else { return Response(status: status, headers: headers) }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
