import Hummingbird
import Logging
import NIOCore

/// `/metrics` (Prometheus text) and `/healthz` (JSON, 503 when records are no longer being
/// committed) over HTTP, as a Hummingbird application: a Service in the daemon's group, on the
/// same event loops as the other servers, stopped by the group's graceful shutdown.
public enum MetricsEndpoint {
    /// The application serving `metrics` on `host:port` (port 0: any free port; the one bound is
    /// logged).
    public static func application(host: String, port: Int, metrics: DaemonMetrics, logger: Logger) -> some ApplicationProtocol {
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
        return Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "cmcd-sentinel"),
            onServerRunning: { channel in
                logger.info("serving /metrics and /healthz on \(channel.localAddress?.description ?? "\(host):\(port)")")
            },
            logger: logger)
    }
}
