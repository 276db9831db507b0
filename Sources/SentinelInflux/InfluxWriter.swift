import AsyncHTTPClient
import CoreMetrics
import CZlib
import Foundation
import Logging
import NIOCore
import SentinelConfig
import SentinelHTTP
import ServiceLifecycle
import Synchronization

/// Why InfluxDB did not take a batch, finally: the daemon must not commit its records.
public struct InfluxWriteError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { "InfluxDB write failed: \(message)" }
}

/// Writes line protocol to InfluxDB in batches (by point count and by age). The buffer is
/// bounded: `append` never waits, and `waitForRoom` suspends while it is full (backpressure).
/// 5xx, 429, timeouts and connection errors are retried with backoff for up to `max_retry_ms`;
/// any other answer, or running out of time, is a final failure that every later call
/// reports, so nothing is dropped silently and the daemon never commits records InfluxDB does
/// not hold. The batches are sent by `run`, a Service: run it in the service group (or a task)
/// for as long as the writer is used.
public final class InfluxWriter: Service, Sendable {
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
        /// The lines, written straight into the buffer's free room and sent as they are (the
        /// HTTP client takes the buffer itself: no copy of a batch on its way out).
        var bytes = ByteBuffer()
        var points = 0
        var length: Int { bytes.readableBytes }

        /// Writes a point of at most `maxBytes` through `write`, which returns its length.
        mutating func write(maxBytes: Int, _ write: (UnsafeMutablePointer<UInt8>) -> Int) {
            bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: maxBytes) { room in
                let written = write(room.baseAddress!.assumingMemoryBound(to: UInt8.self))
                precondition(written <= maxBytes, "a point overran the room it was given")
                return written
            }
            points += 1
        }
    }

    /// Everything the appenders and the sender share.
    struct State {
        var filling = Batch()
        var fillingSince = 0.0
        var sealed: [Batch] = []
        var sendingPoints = 0
        var finalError: InfluxWriteError?
        var closed = false
        var stats = Statistics()
        var resolvedAPI: SentinelConfiguration.Influx.API?
        /// Emptied buffers of written batches, their memory kept for the next ones: a batch
        /// (a megabyte or two with `write_raw`) neither grows by copying itself nor faults
        /// in fresh pages.
        var spareBuffers: [ByteBuffer] = []
        /// The largest batch so far, in bytes: what a new buffer reserves.
        var largestBatchBytes = 0

        var buffered: Int { filling.points + sendingPoints + sealed.reduce(0) { $0 + $1.points } }
        /// Every sealed batch is written (what `flush` waits for, having sealed the filling one).
        var sealedAreWritten: Bool { sealed.isEmpty && sendingPoints == 0 }
        /// Appends must wait for room (what `waitForRoom` waits out).
        func isFull(maxBufferedPoints: Int) -> Bool { !closed && buffered >= maxBufferedPoints }

        /// Points encoded as an array go through here on their way into the batch.
        var scratch: [UInt8] = []

        /// Tasks waiting for the sender to finish a batch or the writer to close (see
        /// `waitForProgress`), by number.
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0

        mutating func seal() {
            largestBatchBytes = max(largestBatchBytes, filling.length)
            sealed.append(filling)
            filling = Batch()
            if let spare = spareBuffers.popLast() {
                filling.bytes = spare
            } else {
                filling.bytes.reserveCapacity(largestBatchBytes + largestBatchBytes / 8)
            }
        }

        /// Keeps a written batch's buffer (taken from `bytes`, which nothing else may hold,
        /// or its memory is not reused) for a later batch; two at most.
        mutating func recycle(_ bytes: inout ByteBuffer) {
            guard spareBuffers.count < 2 else { return }
            var buffer = ByteBuffer()
            swap(&buffer, &bytes)
            buffer.clear()
            spareBuffers.append(buffer)
        }
    }

    /// The writer's metrics (swift-metrics labels) and their help text.
    public static let metricHelp: [String: String] = [
        "cmcd_sentinel_influx_points_written_total": "Points InfluxDB accepted.",
        "cmcd_sentinel_influx_batches_written_total": "Write requests InfluxDB accepted.",
        "cmcd_sentinel_influx_write_retries_total": "Write attempts that failed and were retried.",
        "cmcd_sentinel_influx_buffered_points": "Points waiting for InfluxDB.",
        "cmcd_sentinel_influx_failed": "1 once a write failed for good (the daemon stops uncommitted).",
        "cmcd_sentinel_influx_write_seconds": "Time spent in accepted writes, retries included.",
    ]

    /// The instruments the writer counts with.
    struct Instruments: Sendable {
        let pointsWritten: Counter
        let batchesWritten: Counter
        let retries: Counter
        let writeSeconds: FloatingPointCounter
        let buffered: Gauge
        let failed: Gauge

        init(_ factory: any MetricsFactory) {
            pointsWritten = Counter(label: "cmcd_sentinel_influx_points_written_total", factory: factory)
            batchesWritten = Counter(label: "cmcd_sentinel_influx_batches_written_total", factory: factory)
            retries = Counter(label: "cmcd_sentinel_influx_write_retries_total", factory: factory)
            writeSeconds = FloatingPointCounter(label: "cmcd_sentinel_influx_write_seconds", factory: factory)
            buffered = Gauge(label: "cmcd_sentinel_influx_buffered_points", factory: factory)
            failed = Gauge(label: "cmcd_sentinel_influx_failed", factory: factory)
            failed.record(0)
            buffered.record(0)
        }
    }

    let configuration: SentinelConfiguration.Influx
    let logger: Logger
    let instruments: Instruments
    private let client: HTTPClient
    private let state: Mutex<State>
    /// Wakes the sender when a batch is sealed or the writer closes.
    private let wakeups: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation

    /// `metrics`: where the writer's counters and gauges are made (the daemon's registry; by
    /// default nowhere).
    public init(configuration: SentinelConfiguration.Influx, logger: Logger, metrics: any MetricsFactory = NOOPMetricsHandler.instance) {
        self.configuration = configuration
        self.logger = logger
        instruments = Instruments(metrics)
        client = HTTPClientOptions(timeoutMs: configuration.timeoutMs, verifyTLS: configuration.verifyTLS).makeClient()
        var initial = State()
        initial.resolvedAPI = configuration.api == .auto ? nil : configuration.api
        state = Mutex(initial)
        (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    deinit {
        let client = self.client
        Task { try? await client.shutdown() }
    }

    /// Adds one point, written by `encode` as one line (ending in a newline), without waiting;
    /// throws once a write has finally failed.
    public func append(_ encode: (inout [UInt8]) -> Void) throws(InfluxWriteError) {
        try appendPoint { s in
            var line: [UInt8] = []
            swap(&line, &s.scratch)
            line.removeAll(keepingCapacity: true)
            encode(&line)
            line.withUnsafeBufferPointer { line in
                s.filling.write(maxBytes: line.count) { target in
                    if let source = line.baseAddress { target.update(from: source, count: line.count) }
                    return line.count
                }
            }
            swap(&line, &s.scratch)
        }
    }

    /// Adds one point of at most `maxBytes`, written by `write` from the pointer it is given
    /// (where that much room is free), which returns the point's length; without waiting, and
    /// throws once a write has finally failed. The raw requests' path: no array in between.
    public func append(maxBytes: Int, _ write: (UnsafeMutablePointer<UInt8>) -> Int) throws(InfluxWriteError) {
        try appendPoint { s in s.filling.write(maxBytes: maxBytes, write) }
    }

    private func appendPoint(_ add: (inout State) -> Void) throws(InfluxWriteError) {
        let sealed = try state.withLock { (s: inout State) throws(InfluxWriteError) -> Int? in
            if let finalError = s.finalError { throw finalError }
            if s.filling.points == 0 { s.fillingSince = monotonicSeconds() }
            add(&s)
            guard s.filling.points >= configuration.batchSize else { return nil }
            s.seal()
            return s.buffered
        }
        if let buffered = sealed {
            instruments.buffered.record(buffered)
            wake.yield()
        }
    }

    /// Returns once fewer than `max_buffered_points` points wait (at once if so); throws once a
    /// write has finally failed.
    public func waitForRoom() async throws(InfluxWriteError) {
        while true {
            let full = try state.withLock { (s: inout State) throws(InfluxWriteError) -> Bool in
                if let finalError = s.finalError { throw finalError }
                return s.isFull(maxBufferedPoints: configuration.maxBufferedPoints)
            }
            guard full else { return }
            await waitForProgress(recheckingAfter: 0.1) { s in s.finalError != nil || !s.isFull(maxBufferedPoints: configuration.maxBufferedPoints) }
        }
    }

    /// Waits up to `seconds` until InfluxDB holds every point appended so far. Returns false
    /// if it does not yet (writes are being retried); throws if a write finally failed.
    public func flush(waitingUpTo seconds: Double) async throws(InfluxWriteError) -> Bool {
        let deadline = monotonicSeconds() + seconds
        let sealedNow = state.withLock { s in
            guard s.filling.points > 0 else { return false }
            s.seal()
            return true
        }
        if sealedNow { wake.yield() }
        while true {
            let idle = try state.withLock { (s: inout State) throws(InfluxWriteError) -> Bool in
                if let finalError = s.finalError { throw finalError }
                return s.sealedAreWritten
            }
            if idle { return true }
            let now = monotonicSeconds()
            if now >= deadline { return false }
            await waitForProgress(recheckingAfter: min(0.1, deadline - now)) { s in s.finalError != nil || s.sealedAreWritten }
        }
    }

    /// Suspends until the sender next finishes a batch (written or failed) or the writer
    /// closes, or `recheckingAfter` seconds have passed; at once if `done` holds already (asked
    /// under the lock, so that no progress is missed between asking and waiting). Callers look
    /// again at what they wait for: waking is no promise that it holds.
    private func waitForProgress(recheckingAfter seconds: Double, unless done: (inout State) -> Bool) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let waiter = state.withLock { s -> Int? in
                if done(&s) { return nil }
                let waiter = s.nextWaiter
                s.nextWaiter += 1
                s.waiters[waiter] = continuation
                return waiter
            }
            guard let waiter else { return continuation.resume() }
            Task {
                try? await Task.sleep(for: .milliseconds(max(1, Int(seconds * 1000))))
                self.state.withLock { $0.waiters.removeValue(forKey: waiter) }?.resume()
            }
        }
    }

    /// Wakes every task in `waitForProgress`.
    private func wakeWaiters() {
        let waiters = state.withLock { s in
            defer { s.waiters = [:] }
            return s.waiters
        }
        for continuation in waiters.values { continuation.resume() }
    }

    /// Stops the sender (abandoning retries in progress: their records stay uncommitted).
    public func close() {
        state.withLock { $0.closed = true }
        wake.yield()
        wakeWaiters()
    }

    public var statistics: Statistics {
        state.withLock { s in
            var stats = s.stats
            stats.bufferedPoints = s.buffered
            stats.failed = s.finalError != nil
            return stats
        }
    }

    // MARK: - Sending

    /// What the sender does next.
    enum Step {
        case send(Batch)
        /// Nothing is waiting: sleep until woken.
        case idle
        /// Points are filling a batch: look again after this many milliseconds.
        case wait(Int)
        case stop
    }

    /// The sender: sends sealed batches one at a time, seals a batch once its oldest point is
    /// `flush_interval_ms` old, and returns when the writer is closed (or at the group's
    /// graceful shutdown, or when cancelled), after the batch in hand.
    public func run() async {
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await sendLoop()
            } onCancel: {
                self.close()
            }
        } onGracefulShutdown: {
            self.close()
        }
        try? await client.shutdown()
    }

    private func sendLoop() async {
        var wakeups = self.wakeups.makeAsyncIterator()
        let interval = Double(configuration.flushIntervalMs) / 1000
        while true {
            let step = state.withLock { s -> Step in
                if s.sealed.isEmpty, s.filling.points > 0, monotonicSeconds() - s.fillingSince >= interval { s.seal() }
                if s.closed, s.sealed.isEmpty || s.finalError != nil { return .stop }
                guard s.finalError == nil else { return .idle }
                if !s.sealed.isEmpty {
                    let batch = s.sealed.removeFirst()
                    s.sendingPoints = batch.points
                    return .send(batch)
                }
                if s.filling.points > 0 { return .wait(max(1, Int((s.fillingSince + interval - monotonicSeconds()) * 1000))) }
                return .idle
            }
            switch step {
            case .stop:
                return
            case .idle:
                _ = await wakeups.next()
            case .wait(let ms):
                // Woken early when a batch fills up (or the writer closes); otherwise when the
                // filling one is due.
                let wake = self.wake
                let timer = Task {
                    try await Task.sleep(for: .milliseconds(ms))
                    wake.yield()
                }
                _ = await wakeups.next()
                timer.cancel()
            case .send(var batch):
                let result = await write(batch)
                let points = batch.points
                var written = ByteBuffer()
                if case .success = result { swap(&written, &batch.bytes) }  // the only reference left, reused
                let (buffered, failed) = state.withLock { s in
                    s.sendingPoints = 0
                    switch result {
                    case .success(let seconds):
                        s.stats.pointsWritten += points
                        s.stats.batchesWritten += 1
                        s.stats.writeSeconds += seconds
                        s.recycle(&written)
                    case .failure(let error):
                        if s.closed, s.finalError == nil {
                            s.sealed.insert(batch, at: 0)  // abandoned at shutdown: not written, not committed
                        } else {
                            s.finalError = error
                            s.stats.lastError = error.message
                            logger.error("\(error); \(batch.points) points not written, their records will not be committed")
                        }
                    }
                    return (s.buffered, s.finalError != nil)
                }
                wakeWaiters()
                instruments.buffered.record(buffered)
                if case .success(let seconds) = result {
                    instruments.pointsWritten.increment(by: batch.points)
                    instruments.batchesWritten.increment()
                    instruments.writeSeconds.increment(by: seconds)
                }
                if failed { instruments.failed.record(1) }
            }
        }
    }

    /// Sends one batch, retrying what can be retried.
    private func write(_ batch: Batch) async -> Result<Double, InfluxWriteError> {
        let start = monotonicSeconds()
        let backoff = Backoff(baseMs: 500, capMs: 30_000)
        var attempts = 0
        // Sent as it is (and said so) should zlib not start.
        let compressed = configuration.gzip ? Gzip.compress(batch.bytes) : nil
        let body = compressed ?? batch.bytes
        while true {
            let outcome: DeliveryOutcome
            do {
                let request = try await makeRequest(body: body, gzipped: compressed != nil)
                outcome = await request.send(with: client, timeoutMs: configuration.timeoutMs)
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
                state.withLock { s in
                    s.stats.retries += 1
                    s.stats.lastError = reason
                }
                instruments.retries.increment()
                logger.warning("InfluxDB write failed (\(reason)); retry \(attempts) in \(delay) ms")
                if !(await sleep(milliseconds: delay)) {
                    return .failure(InfluxWriteError(message: "\(reason) (given up at shutdown)"))
                }
            }
        }
    }

    /// Sleeps unless closed meanwhile (looking every 50 ms); false when closed.
    private func sleep(milliseconds: Int64) async -> Bool {
        let deadline = monotonicSeconds() + Double(milliseconds) / 1000
        while !state.withLock({ $0.closed }) {
            let left = deadline - monotonicSeconds()
            if left <= 0 { return true }
            try? await Task.sleep(for: .milliseconds(Int(min(left, 0.05) * 1000) + 1))
        }
        return false
    }

    struct RequestError: Error, CustomStringConvertible { var description: String }

    private func makeRequest(body: ByteBuffer, gzipped: Bool) async throws -> HTTPAttempt {
        let api = try await resolveAPI()
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
        if gzipped { headers.append(("Content-Encoding", "gzip")) }
        return HTTPAttempt(url: url, headers: headers, buffer: body)
    }

    /// The write API: configured, or asked of `/ping` once (`X-Influxdb-Version` 1.x: v1).
    private func resolveAPI() async throws -> SentinelConfiguration.Influx.API {
        if let resolved = state.withLock({ $0.resolvedAPI }) { return resolved }
        var request = HTTPClientRequest(url: "\(configuration.baseURL)/ping")
        request.method = .GET
        let response = try await client.execute(request, timeout: .milliseconds(configuration.timeoutMs))
        _ = try? await response.body.collect(upTo: 1 << 16)
        guard (200..<300).contains(Int(response.status.code)) else { throw RequestError(description: "/ping answered \(response.status.code)") }
        let version = response.headers.first(name: "X-Influxdb-Version") ?? ""
        let api: SentinelConfiguration.Influx.API = version.hasPrefix("1.") || version.hasPrefix("v1.") ? .v1 : .v2
        logger.info("InfluxDB \(version.isEmpty ? "(version not given)" : version): using the \(api.rawValue) write API")
        state.withLock { $0.resolvedAPI = api }
        return api
    }

    static func query(_ value: String) -> String { FormEncoding.component(value) }
}

/// gzip (RFC 1952) through zlib, at its fastest level: line protocol points compress about
/// 31:1 there against 35:1 at the default level, for half the CPU, which the sender thread
/// shares with the consume loop.
enum Gzip {
    /// The batch compressed, written straight into the buffer that is sent; nil when zlib
    /// cannot start (out of memory).
    static func compress(_ input: ByteBuffer) -> ByteBuffer? {
        var stream = z_stream()
        guard deflateInit2_(&stream, Z_BEST_SPEED, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK
        else { return nil }
        defer { deflateEnd(&stream) }
        var output = ByteBuffer()
        let bound = Int(deflateBound(&stream, uLong(input.readableBytes))) + 32
        _ = input.withUnsafeReadableBytes { source in
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { target in
                // zlib does not write through `next_in`; its type is not const.
                stream.next_in = UnsafeMutablePointer(mutating: source.baseAddress?.assumingMemoryBound(to: Bytef.self))
                stream.avail_in = uInt(source.count)
                stream.next_out = target.baseAddress?.assumingMemoryBound(to: Bytef.self)
                stream.avail_out = uInt(target.count)
                let status = deflate(&stream, Z_FINISH)
                precondition(status == Z_STREAM_END, "deflate with a bound-sized buffer must finish")
                return Int(stream.total_out)
            }
        }
        return output
    }
}
