import AsyncHTTPClient
import CZlib
import Foundation
import Logging
import NIOCore
import SentinelConfig
import SentinelHTTP

/// Why InfluxDB did not take a batch, finally: the daemon must not commit its records.
public struct InfluxWriteError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { "InfluxDB write failed: \(message)" }
}

/// Writes line protocol to InfluxDB in batches (by point count and by age) from a thread of
/// its own. The buffer is bounded: when it is full, `append` waits (backpressure). 5xx, 429,
/// timeouts and connection errors are retried with backoff for up to `max_retry_ms`; any other
/// answer, or running out of time, is a final failure that every later call reports, so
/// nothing is dropped silently and the daemon never commits records InfluxDB does not hold.
public final class InfluxWriter: @unchecked Sendable {
    /// Counters for `/metrics`.
    public struct Statistics: Sendable, Equatable {
        public var pointsWritten = 0
        public var batchesWritten = 0
        public var retries = 0
        public var bufferedPoints = 0
        public var writeSeconds = 0.0
        public var failed = false
        public var lastError: String?
    }

    struct Batch {
        var bytes: [UInt8] = []
        var points = 0
    }

    let configuration: SentinelConfiguration.Influx
    let logger: Logger
    private let client: HTTPClient
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var filling = Batch()
    private var fillingSince = 0.0
    private var sealed: [Batch] = []
    private var sendingPoints = 0
    private var finalError: InfluxWriteError?
    private var closed = false
    private var stats = Statistics()
    private var resolvedAPI: SentinelConfiguration.Influx.API?
    private var thread: Thread?

    public init(configuration: SentinelConfiguration.Influx, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        client = HTTPClientOptions(timeoutMs: configuration.timeoutMs, verifyTLS: configuration.verifyTLS).makeClient()
        resolvedAPI = configuration.api == .auto ? nil : configuration.api
        let thread = Thread { [unowned self] in senderLoop() }
        thread.name = "cmcd-sentinel-influx"
        self.thread = thread
        thread.start()
    }

    deinit { try? client.syncShutdown() }

    /// Adds one point, written by `encode` as one line (ending in a newline). Waits while the
    /// buffer is full; throws once a write has finally failed.
    public func append(_ encode: (inout [UInt8]) -> Void) throws(InfluxWriteError) {
        condition.lock()
        defer { condition.unlock() }
        while finalError == nil, !closed, buffered >= configuration.maxBufferedPoints { condition.wait() }
        if let finalError { throw finalError }
        if filling.points == 0 { fillingSince = monotonicSeconds() }
        encode(&filling.bytes)
        filling.points += 1
        if filling.points >= configuration.batchSize { seal() }
    }

    /// Waits up to `seconds` until InfluxDB holds every point appended so far. Returns false
    /// if it does not yet (writes are being retried); throws if a write finally failed.
    public func flush(waitingUpTo seconds: Double) throws(InfluxWriteError) -> Bool {
        let deadline = Date(timeIntervalSinceNow: seconds)
        condition.lock()
        defer { condition.unlock() }
        if filling.points > 0 { seal() }
        while finalError == nil, !sealed.isEmpty || sendingPoints > 0 {
            if !condition.wait(until: deadline) { break }
        }
        if let finalError { throw finalError }
        return sealed.isEmpty && sendingPoints == 0
    }

    /// Stops the sender (abandoning retries in progress: their records stay uncommitted).
    public func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
        while thread?.isFinished == false { usleep(5_000) }
    }

    public var statistics: Statistics {
        condition.lock()
        defer { condition.unlock() }
        var s = stats
        s.bufferedPoints = buffered
        s.failed = finalError != nil
        return s
    }

    private var buffered: Int { filling.points + sendingPoints + sealed.reduce(0) { $0 + $1.points } }

    private func seal() {
        sealed.append(filling)
        filling = Batch()
        condition.broadcast()
    }

    // MARK: - Sending

    private func senderLoop() {
        condition.lock()
        while true {
            if sealed.isEmpty, filling.points > 0, monotonicSeconds() - fillingSince >= Double(configuration.flushIntervalMs) / 1000 {
                seal()
            }
            if closed, sealed.isEmpty || finalError != nil { break }
            guard finalError == nil, !sealed.isEmpty else {
                _ = condition.wait(until: Date(timeIntervalSinceNow: 0.05))
                continue
            }
            let batch = sealed.removeFirst()
            sendingPoints = batch.points
            condition.unlock()
            let result = write(batch)
            condition.lock()
            sendingPoints = 0
            switch result {
            case .success(let seconds):
                stats.pointsWritten += batch.points
                stats.batchesWritten += 1
                stats.writeSeconds += seconds
            case .failure(let error):
                if closed, finalError == nil {
                    sealed.insert(batch, at: 0)  // abandoned at shutdown: not written, not committed
                } else {
                    finalError = error
                    stats.lastError = error.message
                    logger.error("\(error); \(batch.points) points not written, their records will not be committed")
                }
            }
            condition.broadcast()
        }
        condition.unlock()
    }

    /// Sends one batch, retrying what can be retried. Runs on the sender thread.
    private func write(_ batch: Batch) -> Result<Double, InfluxWriteError> {
        let start = monotonicSeconds()
        let backoff = Backoff(baseMs: 500, capMs: 30_000)
        var attempts = 0
        let body = configuration.gzip ? Gzip.compress(batch.bytes) : batch.bytes
        while true {
            let outcome: DeliveryOutcome
            do {
                outcome = try makeRequest(body: body).sendBlocking(with: client, timeoutMs: configuration.timeoutMs)
            } catch {
                outcome = .retry(status: nil, reason: "\(error)", retryAfterMs: nil)
            }
            switch outcome {
            case .delivered:
                if attempts > 0 { logger.info("InfluxDB write succeeded after \(attempts) retries") }
                return .success(monotonicSeconds() - start)
            case .reject(_, let reason):
                return .failure(InfluxWriteError(message: reason))
            case .retry(_, let reason, let retryAfter):
                attempts += 1
                let elapsedMs = Int64((monotonicSeconds() - start) * 1000)
                if elapsedMs >= configuration.maxRetryMs {
                    return .failure(InfluxWriteError(message: "\(reason) (still failing after \(attempts) attempts in \(elapsedMs / 1000) s)"))
                }
                let delay = backoff.delayMs(afterAttempts: attempts, retryAfterMs: retryAfter)
                condition.lock()
                stats.retries += 1
                stats.lastError = reason
                condition.unlock()
                logger.warning("InfluxDB write failed (\(reason)); retry \(attempts) in \(delay) ms")
                if !sleep(milliseconds: delay) {
                    return .failure(InfluxWriteError(message: "\(reason) (given up at shutdown)"))
                }
            }
        }
    }

    /// Sleeps unless closed meanwhile; false when closed.
    private func sleep(milliseconds: Int64) -> Bool {
        let deadline = Date(timeIntervalSinceNow: Double(milliseconds) / 1000)
        condition.lock()
        defer { condition.unlock() }
        while !closed, condition.wait(until: deadline) {}
        return !closed
    }

    struct RequestError: Error, CustomStringConvertible { var description: String }

    private func makeRequest(body: [UInt8]) throws -> HTTPAttempt {
        let api = try resolveAPI()
        let base = configuration.baseURL
        var url: String
        switch api {
        case .v2:
            url = "\(base)/api/v2/write?org=\(Self.query(configuration.org))&bucket=\(Self.query(configuration.database))&precision=ms"
        default:
            url = "\(base)/write?db=\(Self.query(configuration.database))&precision=ms"
            if !configuration.retentionPolicy.isEmpty { url += "&rp=\(Self.query(configuration.retentionPolicy))" }
        }
        var headers = [("Content-Type", "text/plain; charset=utf-8")]
        if !configuration.token.isEmpty { headers.append(("Authorization", "Token \(configuration.token)")) }
        if configuration.gzip { headers.append(("Content-Encoding", "gzip")) }
        return HTTPAttempt(url: url, headers: headers, body: body)
    }

    /// The write API: configured, or asked of `/ping` once (`X-Influxdb-Version` 1.x: v1).
    private func resolveAPI() throws -> SentinelConfiguration.Influx.API {
        if let resolvedAPI { return resolvedAPI }
        let base = configuration.baseURL
        let request = try HTTPClient.Request(url: "\(base)/ping", method: .GET)
        let response = try client.execute(request: request, deadline: .now() + .milliseconds(configuration.timeoutMs)).wait()
        guard (200..<300).contains(Int(response.status.code)) else { throw RequestError(description: "/ping answered \(response.status.code)") }
        let version = response.headers.first(name: "X-Influxdb-Version") ?? ""
        let api: SentinelConfiguration.Influx.API = version.hasPrefix("1.") || version.hasPrefix("v1.") ? .v1 : .v2
        logger.info("InfluxDB \(version.isEmpty ? "(version not given)" : version): using the \(api.rawValue) write API")
        resolvedAPI = api
        return api
    }

    static func query(_ value: String) -> String { FormEncoding.component(value) }
}

/// gzip (RFC 1952) through zlib, at its fastest level: line protocol points compress about
/// 31:1 there against 35:1 at the default level, for half the CPU, which the sender thread
/// shares with the consumer.
enum Gzip {
    static func compress(_ input: [UInt8]) -> [UInt8] {
        var stream = z_stream()
        guard deflateInit2_(&stream, Z_BEST_SPEED, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK
        else { return input }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(input.count))) + 32)
        var input = input
        let status = input.withUnsafeMutableBufferPointer { source in
            output.withUnsafeMutableBufferPointer { target in
                stream.next_in = source.baseAddress
                stream.avail_in = uInt(source.count)
                stream.next_out = target.baseAddress
                stream.avail_out = uInt(target.count)
                return deflate(&stream, Z_FINISH)
            }
        }
        precondition(status == Z_STREAM_END, "deflate with a bound-sized buffer must finish")
        output.removeSubrange(Int(stream.total_out)...)
        return output
    }
}
