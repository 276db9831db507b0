import CMCD
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import SentinelHTTP
import SentinelKafka
import Synchronization

/// `cmcd-sentinel collect`: an HTTP endpoint for CMCD v2 event-mode batches (and v2
/// request-mode data sent as query or headers) that produces each report to Kafka as one
/// `cmcd` record keyed by session id, so event reports reach the same detectors as CDN logs.
///
/// A batch is answered 204 only once the broker has confirmed every report of it; when the
/// broker cannot take them the answer is 503 with `Retry-After`, and the player retries the
/// batch (CTA-5004-B: 5xx means batch and retry), so an answered report is never lost.
public final class CollectorServer: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        public var topic: String
        /// Bearer token required on every report request; nil: none.
        public var token: String?
        /// Largest request body, in bytes (413 beyond).
        public var maxBodyBytes = 1 << 20
        /// Most reports in one batch.
        public var maxReportsPerBatch = 1_000
        /// Reports accepted per second on average, over all clients (429 beyond).
        public var reportsPerSecond = 20_000.0

        public init(host: String, port: Int, topic: String, token: String? = nil) {
            self.host = host
            self.port = port
            self.topic = topic
            self.token = token
        }
    }

    let configuration: Configuration
    let producer: KafkaProducer
    let logger: Logger
    private let bucket: Mutex<TokenBucket>
    private let counters = Mutex(Counters())

    struct Counters {
        var batches = 0, reports = 0, rejected = 0, refused = 0
    }

    public init(configuration: Configuration, producer: KafkaProducer, logger: Logger) {
        self.configuration = configuration
        self.producer = producer
        self.logger = logger
        bucket = Mutex(TokenBucket(rate: configuration.reportsPerSecond, burst: max(configuration.reportsPerSecond, Double(configuration.maxReportsPerBatch))))
    }

    /// Serves until SIGTERM or SIGINT; in-flight batches are answered first.
    public func run() async throws {
        let router = Router()
        router.get("/healthz") { _, _ in "ok\n" }
        for method in [HTTPRequest.Method.post, .get] {
            router.on("/cmcd", method: method) { request, _ in try await self.handle(request) }
        }
        let app = Application(
            router: router, configuration: .init(address: .hostname(configuration.host, port: configuration.port)), logger: logger)
        logger.info("collecting CMCD on http://\(configuration.host):\(configuration.port)/cmcd into topic \(configuration.topic)")
        try await withThrowingTaskGroup(of: Void.self) { group in
            // Delivery reports arrive while the producer is polled (never blocking: timeout 0).
            group.addTask {
                while !Task.isCancelled {
                    self.producer.poll(timeoutMs: 0)
                    try? await Task.sleep(for: .milliseconds(2))
                }
            }
            try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
            group.cancelAll()
        }
        let c = counters.withLock { $0 }
        logger.info("collector stopped: \(c.batches) requests, \(c.reports) reports produced, \(c.rejected) rejected, \(c.refused) refused")
    }

    func handle(_ request: Request) async throws -> Response {
        if let token = configuration.token, !BearerToken.matches(request.headers[.authorization], token: token) {
            return Self.answer(.unauthorized, "a valid bearer token is required", extra: [.wwwAuthenticate: "Bearer"])
        }
        let now = Int64((Date().timeIntervalSince1970 * 1000).rounded())
        var headers: [(name: String, value: String)] = []
        for field in request.headers { headers.append((field.name.canonicalName, field.value)) }
        var records: [CollectorReports.Record] = []
        var rejected: [CollectorReports.Rejection] = []
        if let single = CollectorReports.fromRequest(query: request.uri.query, headers: headers, receivedAt: now) {
            switch single {
            case .success(let record): records = [record]
            case .failure(let why): rejected = [why]
            }
        } else {
            guard request.method == .post else { return Self.answer(.badRequest, "no CMCD: POST an event batch or send CMCD-* headers or a CMCD= query") }
            if let type = request.headers[.contentType]?.lowercased(),
                !["application/cmcd", "text/cmcd", "text/plain"].contains(where: { type.hasPrefix($0) })
            {
                return Self.answer(.unsupportedMediaType, "Content-Type must be application/cmcd (or text/cmcd)")
            }
            let body: ByteBuffer
            do { body = try await request.body.collect(upTo: configuration.maxBodyBytes) } catch {
                return Self.answer(.contentTooLarge, "body exceeds \(configuration.maxBodyBytes) bytes")
            }
            (records, rejected) = CollectorReports.fromBody(Array(buffer: body), receivedAt: now, maxReports: configuration.maxReportsPerBatch)
        }
        counters.withLock {
            $0.batches += 1
            $0.rejected += rejected.count
        }
        guard !records.isEmpty else {
            return Self.answer(.badRequest, rejected.first.map { "no usable report: \($0)" } ?? "empty batch")
        }
        let admitted = bucket.withLock { $0.take(records.count, at: monotonicSeconds()) }
        guard admitted else {
            counters.withLock { $0.refused += records.count }
            return Self.answer(.tooManyRequests, "over \(Int(configuration.reportsPerSecond)) reports per second", extra: [.retryAfter: "1"])
        }
        let group = DeliveryGroup()
        do {
            for record in records {
                try producer.send(topic: configuration.topic, key: Array(record.key.utf8), value: Array(record.line.utf8), group: group)
            }
        } catch {
            _ = await group.delivered()  // those already queued still report
            counters.withLock { $0.refused += records.count }
            logger.warning("collector: cannot queue reports: \(error)")
            return Self.answer(.serviceUnavailable, "the broker cannot take reports now", extra: [.retryAfter: "1"])
        }
        if let failure = await group.delivered() {
            counters.withLock { $0.refused += records.count }
            logger.warning("collector: reports not delivered: \(failure)")
            return Self.answer(.serviceUnavailable, "the broker did not confirm the reports", extra: [.retryAfter: "1"])
        }
        counters.withLock { $0.reports += records.count }
        var response = Response(status: .noContent)
        if let first = rejected.first {
            // Said to the player's developer; the usable reports were produced.
            response.headers[HTTPField.Name("CMCD-Rejected")!] = "\(rejected.count); \(Self.printable(first.description))"
        }
        return response
    }

    static func answer(_ status: HTTPResponse.Status, _ message: String, extra: HTTPFields = [:]) -> Response {
        var headers = extra
        headers[.contentType] = "application/json"
        let body = #"{"error":"\#(printable(message).replacingOccurrences(of: "\"", with: "'"))"}"# + "\n"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    /// Printable ASCII, at most 200 characters (reasons can quote what a viewer sent).
    static func printable(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.prefix(200).map { $0.value >= 0x20 && $0.value < 0x7F && $0 != "\\" ? $0 : "?" }))
    }
}
