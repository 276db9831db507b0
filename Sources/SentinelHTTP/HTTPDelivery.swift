import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// How an HTTP client for a sink is set up: TLS verification on unless switched off, a
/// timeout on every request, always, and a refused connection reported at once.
public struct HTTPClientOptions: Sendable, Equatable {
    /// Whole-request timeout.
    public var timeoutMs: Int64 = 10_000
    /// Verify the server's certificate (off only for development servers).
    public var verifyTLS = true
    public init(timeoutMs: Int64 = 10_000, verifyTLS: Bool = true) {
        self.timeoutMs = timeoutMs
        self.verifyTLS = verifyTLS
    }

    /// A new client with these options; shut it down with `shutdown()` when done.
    public func makeClient() -> HTTPClient {
        var tls = TLSConfiguration.makeClientConfiguration()
        if !verifyTLS { tls.certificateVerification = .none }
        let timeout = HTTPClient.Configuration.Timeout(
            connect: .milliseconds(min(timeoutMs, 10_000)), read: .milliseconds(timeoutMs))
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: tls, redirectConfiguration: .disallow, timeout: timeout)
        configuration.httpVersion = .http1Only
        // A refused connection is an answer: fail the attempt now and let the sink's backoff
        // schedule decide when to try again (the pool would otherwise keep reconnecting until
        // the whole request timeout, and a down receiver would cost a timeout per attempt).
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }
}

/// The outcome of one HTTP attempt, classified for retrying.
public enum DeliveryOutcome: Sendable, Equatable {
    /// 2xx.
    case delivered(status: Int)
    /// 5xx, 429, a timeout or a connection error: try again, not before `retryAfterMs` if the
    /// server said so.
    case retry(status: Int?, reason: String, retryAfterMs: Int64?)
    /// Any other answer (4xx but 429, or a 3xx that was not followed): trying again cannot help.
    case reject(status: Int, reason: String)

    public var isDelivered: Bool { if case .delivered = self { true } else { false } }
}

/// A request, sent once, its answer classified.
public struct HTTPAttempt: Sendable {
    public var url: String
    public var method: HTTPMethod = .POST
    public var headers: [(String, String)] = []
    /// Sent as it is (the HTTP client takes the buffer, no copy).
    public var body: ByteBuffer

    public init(url: String, method: HTTPMethod = .POST, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.init(url: url, method: method, headers: headers, buffer: ByteBuffer(bytes: body))
    }

    /// A request whose body is already in a buffer (a batch written in place).
    public init(url: String, method: HTTPMethod = .POST, headers: [(String, String)] = [], buffer: ByteBuffer) {
        self.url = url
        self.method = method
        self.headers = headers
        self.body = buffer
    }

    /// Sends the request with `client` and classifies the answer. At most 4 KiB of a
    /// response body is kept (for the error message); `now` dates `Retry-After` HTTP dates.
    public func send(with client: HTTPClient, timeoutMs: Int64, now: Date = Date()) async -> DeliveryOutcome {
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if body.readableBytes > 0 || method == .POST {
            request.body = .bytes(body)
        }
        do {
            let response = try await client.execute(request, timeout: .milliseconds(timeoutMs))
            let text = (try? await response.body.collect(upTo: 1 << 20)).map { String(buffer: $0) } ?? ""
            return Self.classify(status: Int(response.status.code), headers: response.headers, body: text, now: now)
        } catch {
            return .retry(status: nil, reason: Self.describe(error), retryAfterMs: nil)
        }
    }

    static func classify(status: Int, headers: HTTPHeaders, body: String, now: Date) -> DeliveryOutcome {
        let snippet = String(body.prefix(4096)).trimmingCharacters(in: .whitespacesAndNewlines)
        let reason = "HTTP \(status)\(snippet.isEmpty ? "" : ": \(snippet)")"
        switch status {
        case 200..<300:
            return .delivered(status: status)
        case 429, 500..<600:
            let retryAfter = headers.first(name: "Retry-After").flatMap { RetryAfter.milliseconds($0, now: now) }
            return .retry(status: status, reason: reason, retryAfterMs: retryAfter)
        default:
            return .reject(status: status, reason: reason)
        }
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .readTimeout, .connectTimeout, .writeTimeout: return "timeout"
            default: return "\(error)"
            }
        }
        return "\(error)"
    }
}

/// `Retry-After` as delay-seconds or an HTTP date, in milliseconds from `now` (at most a day).
public enum RetryAfter {
    public static func milliseconds(_ value: String, now: Date) -> Int64? {
        let text = value.trimmingCharacters(in: .whitespaces)
        if let seconds = Int64(text), seconds >= 0 { return min(seconds, 86_400) * 1000 }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: text) else { return nil }
        return Int64(min(max(date.timeIntervalSince(now), 0), 86_400) * 1000)
    }
}

/// Exponential backoff with jitter: after n failed attempts the wait is a random time between
/// half and all of `min(cap, base * 2^(n-1))`, and never less than what the server asked for.
public struct Backoff: Sendable, Equatable {
    public var baseMs: Int64
    public var capMs: Int64

    public init(baseMs: Int64 = 1_000, capMs: Int64 = 300_000) {
        self.baseMs = baseMs
        self.capMs = capMs
    }

    /// The delay before the next attempt after `attempts` failed ones.
    public func delayMs(afterAttempts attempts: Int, retryAfterMs: Int64? = nil) -> Int64 {
        let exponent = min(max(attempts - 1, 0), 30)
        let ceiling = min(capMs, baseMs.multipliedReportingOverflow(by: Int64(1) << exponent).overflow ? capMs : baseMs << exponent)
        let jittered = Int64.random(in: ceiling / 2...max(ceiling, ceiling / 2))
        return max(jittered, min(retryAfterMs ?? 0, 86_400_000))
    }
}

/// Seconds on the monotonic clock, for intervals (retry budgets, flush intervals, timings):
/// unlike `Date()`, it does not jump when the wall clock is set.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// `application/x-www-form-urlencoded` and URL query text, strict: everything but the
/// unreserved characters is percent-encoded (InfluxDB 1.x's Go splits form fields at `;` too).
public enum FormEncoding {
    static let unreserved: CharacterSet = {
        var set = CharacterSet()
        set.insert(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        return set
    }()

    /// One name or value, percent-encoded.
    public static func component(_ text: String) -> String { text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? "" }

    /// `name=value&...`.
    public static func encode(_ pairs: [(String, String)]) -> String {
        pairs.map { "\(component($0.0))=\(component($0.1))" }.joined(separator: "&")
    }
}
