import AsyncHTTPClient
import Foundation
import NIOCore
import SentinelHTTP
import SentinelJSON

/// An error an AWS JSON API answered (`__type` and `message`), or a request that got no
/// answer (`status` nil).
public struct AWSError: Error, CustomStringConvertible, Sendable {
    /// The exception's name without its namespace, e.g. `ProvisionedThroughputExceededException`.
    public var type: String
    public var message: String
    public var status: Int?

    public init(type: String, message: String, status: Int?) {
        self.type = type
        self.message = message
        self.status = status
    }

    public var description: String { "\(type)\(status.map { " (HTTP \($0))" } ?? ""): \(message)" }

    /// Throttled: the same call succeeds later.
    public var isThrottling: Bool {
        ["ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException", "RequestLimitExceeded",
         "KMSThrottlingException", "TooManyRequestsException", "ThrottledException"].contains(type)
    }

    /// Worth trying again: throttling, a server error, or no answer at all.
    public var isRetryable: Bool { isThrottling || status == nil || (status ?? 0) >= 500 || type == "InternalFailure" || type == "ServiceUnavailable" }
}

/// One AWS service spoken through its JSON protocol (Kinesis: 1.1, DynamoDB: 1.0): signed
/// POSTs to `/` naming the operation in `X-Amz-Target`. Throttling, server errors and lost
/// connections are retried with backoff, up to `maxAttempts`; other errors are thrown at once.
public struct AWSJSONService: Sendable {
    public let endpoint: String
    let host: String
    let signer: SigV4
    let targetPrefix: String
    let contentType: String
    let credentials: AWSCredentialChain
    let http: HTTPClient
    public var timeoutMs: Int64 = 10_000
    public var maxAttempts = 8
    public var backoff = Backoff(baseMs: 100, capMs: 5_000)
    /// Called each time a throttled call is tried again (for a metric).
    public var onThrottle: (@Sendable () -> Void)?

    /// `endpoint`: scheme, host and port (`https://kinesis.eu-west-1.amazonaws.com`).
    public init(
        endpoint: String, region: String, service: String, targetPrefix: String, jsonVersion: String, credentials: AWSCredentialChain, http: HTTPClient
    ) throws {
        let trimmed = endpoint.trimmingSuffix("/")
        guard let url = URL(string: trimmed), let scheme = url.scheme, ["http", "https"].contains(scheme), let host = url.host, !host.isEmpty else {
            throw AWSError(type: "BadEndpoint", message: "not an http(s) URL: \(endpoint)", status: nil)
        }
        self.endpoint = trimmed
        self.host = url.port.map { "\(host):\($0)" } ?? host
        signer = SigV4(region: region, service: service)
        self.targetPrefix = targetPrefix
        contentType = "application/x-amz-json-\(jsonVersion)"
        self.credentials = credentials
        self.http = http
    }

    /// Calls `operation` with `input` and returns the answer's document.
    public func call(_ operation: String, _ input: JSONValue) async throws -> JSONValue {
        var body: [UInt8] = []
        JSONWriter.write(input, into: &body)
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await send(operation, body)
            } catch let error as AWSError where error.isRetryable && attempt < maxAttempts {
                if error.isThrottling { onThrottle?() }
                try await Task.sleep(for: .milliseconds(backoff.delayMs(afterAttempts: attempt)))
            }
        }
    }

    private func send(_ operation: String, _ body: [UInt8]) async throws -> JSONValue {
        let headers = [("host", host), ("content-type", contentType), ("x-amz-target", "\(targetPrefix).\(operation)")]
        let signature = signer.sign(method: "POST", path: "/", headers: headers, body: body, credentials: try await credentials.credentials(), date: Date())
        var request = HTTPClientRequest(url: endpoint + "/")
        request.method = .POST
        for (name, value) in headers.dropFirst() + signature { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        let response: HTTPClientResponse
        let answer: ByteBuffer
        do {
            response = try await http.execute(request, timeout: .milliseconds(timeoutMs))
            // GetRecords answers up to 10 MB of records, base64-encoded.
            answer = try await response.body.collect(upTo: 32 << 20)
        } catch {
            throw AWSError(type: "NoAnswer", message: "\(operation) to \(endpoint): \(error)", status: nil)
        }
        let document: JSONValue
        do {
            let bytes = Array(answer.readableBytesView)
            document = try bytes.withUnsafeBufferPointer { try JSONParser.parse(bytes: $0, limits: .init(maxDepth: 16, maxElements: 1_000_000)) }
        } catch {
            if response.status.code >= 300 {
                throw AWSError(type: "HTTP\(response.status.code)", message: String(String(buffer: answer).prefix(300)), status: Int(response.status.code))
            }
            throw AWSError(type: "BadAnswer", message: "\(operation): \(error)", status: Int(response.status.code))
        }
        guard response.status.code < 300 else {
            // `__type` may carry a namespace: `com.amazonaws.kinesis.v20131202#ResourceNotFoundException`.
            let type = (document["__type"]?.stringValue ?? "HTTP\(response.status.code)").split(separator: "#").last.map(String.init) ?? ""
            let message = document["message"]?.stringValue ?? document["Message"]?.stringValue ?? ""
            throw AWSError(type: type, message: message, status: Int(response.status.code))
        }
        return document
    }
}
