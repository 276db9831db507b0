import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import SentinelHTTP

/// `/metrics` (Prometheus text) and `/healthz` (JSON, 503 when records are no longer being
/// committed) over HTTP, as a Hummingbird application: a Service in the daemon's group, on the
/// same event loops as the other servers, stopped by the group's graceful shutdown.
public enum MetricsEndpoint {
    /// The application serving `metrics` on `host:port` (port 0: any free port; the one bound is
    /// logged), and the JSON `apis` under their mount points (the silences, say).
    public static func application(
        host: String, port: Int, metrics: DaemonMetrics, apis: [HTTPAPI] = [], logger: Logger
    ) -> some ApplicationProtocol {
        let router = Router()
        router.get("/metrics") { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: metrics.render())))
        }
        router.get("/healthz") { _, _ -> Response in
            let health = metrics.health
            return Response(
                status: health.healthy ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: health.detail + "\n")))
        }
        for api in apis {
            for method in [HTTPRequest.Method.get, .post, .delete, .put, .patch] {
                for path in [api.mountPoint, api.mountPoint + "/**"] {
                    router.on(RouterPath(path), method: method) { request, _ -> Response in
                        try await serve(api, request)
                    }
                }
            }
        }
        return Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "cmcd-sentinel"),
            onServerRunning: { channel in
                logger.info("serving /metrics and /healthz on \(channel.localAddress?.description ?? "\(host):\(port)")")
            },
            logger: logger)
    }

    /// One API request: the body read up to the API's limit (413 beyond), the answer as JSON.
    static func serve(_ api: HTTPAPI, _ request: Request) async throws -> Response {
        let json: HTTPFields = [.contentType: "application/json"]
        let body = request.body
        let bytes: [UInt8]
        do {
            bytes = Array(buffer: try await body.collect(upTo: api.maxBodyBytes))
        } catch {
            return Response(
                status: .contentTooLarge, headers: json,
                body: .init(byteBuffer: ByteBuffer(string: "{\"error\":\"the body is larger than \(api.maxBodyBytes) bytes\"}\n")))
        }
        var path = String(request.uri.path.dropFirst(api.mountPoint.count))
        while path.hasPrefix("/") { path.removeFirst() }
        var query: [String: String] = [:]
        for (key, value) in request.uri.queryParameters { query[String(key)] = String(value) }
        let answer = await api.handle(
            HTTPAPI.Request(
                method: request.method.rawValue, path: path, query: query, authorization: request.headers[.authorization], body: bytes))
        var headers = json
        for (name, value) in answer.headers {
            if let field = HTTPField.Name(name) { headers[field] = value }
        }
        return Response(status: .init(code: answer.status), headers: headers, body: .init(byteBuffer: ByteBuffer(string: answer.body)))
    }
}
