import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SentinelJSON
import Synchronization

/// Where AWS credentials come from, in the order the AWS SDKs look: the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), the shared credentials
/// file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, profile `AWS_PROFILE` or
/// `default`), the container endpoint (ECS and EKS: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or
/// `..._FULL_URI`, with `AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]`), then the instance metadata
/// service (IMDSv2, at `AWS_EC2_METADATA_SERVICE_ENDPOINT` or 169.254.169.254, unless
/// `AWS_EC2_METADATA_DISABLED=true`). Temporary credentials are kept until five minutes
/// before they expire, then fetched again.
public final class AWSCredentialChain: Sendable {
    /// Credentials and when they stop working (nil: they do not expire).
    struct Resolved: Sendable {
        var credentials: SigV4.Credentials
        var expiresAtMs: Int64?
        var source: String
    }

    public struct NoCredentials: Error, CustomStringConvertible {
        public let tried: [String]
        public var description: String { "no AWS credentials found (tried: \(tried.joined(separator: "; ")))" }
    }

    private let environment: [String: String]
    private let http: HTTPClient
    private let cached = Mutex<Resolved?>(nil)

    /// `environment`: the variables to read (the process's by default).
    public init(environment: [String: String] = ProcessInfo.processInfo.environment, http: HTTPClient) {
        self.environment = environment
        self.http = http
    }

    /// Valid credentials, resolved again when the kept ones are about to expire.
    public func credentials() async throws -> SigV4.Credentials {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        if let kept = cached.withLock({ $0 }), (kept.expiresAtMs ?? .max) - now > 300_000 { return kept.credentials }
        let resolved = try await resolve()
        cached.withLock { $0 = resolved }
        return resolved.credentials
    }

    /// Where the credentials in use came from (for the log).
    public func source() async throws -> String {
        _ = try await credentials()
        return cached.withLock { $0?.source } ?? ""
    }

    func resolve() async throws -> Resolved {
        var tried: [String] = []
        if let key = nonEmpty("AWS_ACCESS_KEY_ID"), let secret = nonEmpty("AWS_SECRET_ACCESS_KEY") {
            return Resolved(
                credentials: SigV4.Credentials(accessKeyID: key, secretAccessKey: secret, sessionToken: nonEmpty("AWS_SESSION_TOKEN")),
                expiresAtMs: nil, source: "environment")
        }
        tried.append("environment")
        let profile = nonEmpty("AWS_PROFILE") ?? "default"
        let file = nonEmpty("AWS_SHARED_CREDENTIALS_FILE") ?? (nonEmpty("HOME").map { "\($0)/.aws/credentials" } ?? "")
        if !file.isEmpty, let text = try? String(contentsOfFile: file, encoding: .utf8) {
            if let credentials = Self.profileCredentials(text, profile: profile) {
                return Resolved(credentials: credentials, expiresAtMs: nil, source: "profile \(profile) in \(file)")
            }
            tried.append("profile \(profile) in \(file): no access key")
        } else {
            tried.append("no credentials file at \(file.isEmpty ? "~/.aws/credentials" : file)")
        }
        if let url = containerURL {
            var headers: [(String, String)] = []
            if let token = nonEmpty("AWS_CONTAINER_AUTHORIZATION_TOKEN") {
                headers.append(("Authorization", token))
            } else if let path = nonEmpty("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
                let token = try? String(contentsOfFile: path, encoding: .utf8)
            {
                headers.append(("Authorization", token.trimmingCharacters(in: .whitespacesAndNewlines)))
            }
            do {
                let body = try await fetch(url, method: .GET, headers: headers, timeoutMs: 5_000)
                return try Self.temporaryCredentials(body, source: "container endpoint \(url)")
            } catch {
                tried.append("container endpoint \(url): \(error)")
            }
        }
        if nonEmpty("AWS_EC2_METADATA_DISABLED")?.lowercased() != "true" {
            let base = (nonEmpty("AWS_EC2_METADATA_SERVICE_ENDPOINT") ?? "http://169.254.169.254").trimmingSuffix("/")
            do {
                let token = try await fetch(
                    "\(base)/latest/api/token", method: .PUT, headers: [("X-aws-ec2-metadata-token-ttl-seconds", "21600")], timeoutMs: 1_000)
                let tokenHeader = [("X-aws-ec2-metadata-token", String(decoding: token, as: UTF8.self))]
                let roles = try await fetch("\(base)/latest/meta-data/iam/security-credentials/", method: .GET, headers: tokenHeader, timeoutMs: 1_000)
                guard let role = String(decoding: roles, as: UTF8.self).split(whereSeparator: \.isNewline).first.map(String.init), !role.isEmpty
                else { throw AWSError(type: "NoRole", message: "the instance has no IAM role", status: nil) }
                let body = try await fetch("\(base)/latest/meta-data/iam/security-credentials/\(role)", method: .GET, headers: tokenHeader, timeoutMs: 1_000)
                return try Self.temporaryCredentials(body, source: "instance role \(role)")
            } catch {
                tried.append("instance metadata at \(base): \(error)")
            }
        }
        throw NoCredentials(tried: tried)
    }

    private func nonEmpty(_ name: String) -> String? {
        guard let value = environment[name], !value.isEmpty else { return nil }
        return value
    }

    private var containerURL: String? {
        if let relative = nonEmpty("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") { return "http://169.254.170.2\(relative)" }
        return nonEmpty("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    }

    private func fetch(_ url: String, method: HTTPMethod, headers: [(String, String)], timeoutMs: Int64) async throws -> [UInt8] {
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        let response = try await http.execute(request, timeout: .milliseconds(timeoutMs))
        let body = try await response.body.collect(upTo: 64 * 1024)
        guard response.status.code == 200 else {
            throw AWSError(type: "HTTP\(response.status.code)", message: String(buffer: body).prefix(200).description, status: Int(response.status.code))
        }
        return Array(buffer: body)
    }

    /// The access key of `profile` in a shared credentials file (INI: `[profile]` sections of
    /// `key = value` lines).
    static func profileCredentials(_ text: String, profile: String) -> SigV4.Credentials? {
        var section: String?
        var values: [String: String] = [:]
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("["), line.hasSuffix("]") {
                section = String(line.dropFirst().dropLast()).trimmingCharacters(in: .whitespaces)
                continue
            }
            guard section == profile, let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            values[key] = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
        }
        guard let key = values["aws_access_key_id"], !key.isEmpty, let secret = values["aws_secret_access_key"], !secret.isEmpty else { return nil }
        return SigV4.Credentials(accessKeyID: key, secretAccessKey: secret, sessionToken: values["aws_session_token"].flatMap { $0.isEmpty ? nil : $0 })
    }

    /// The container endpoint's and the instance metadata's answer: `AccessKeyId`,
    /// `SecretAccessKey`, `Token`, `Expiration` (RFC 3339).
    static func temporaryCredentials(_ body: [UInt8], source: String) throws -> Resolved {
        let document = try body.withUnsafeBufferPointer { try JSONParser.parse(bytes: $0) }
        guard let key = document["AccessKeyId"]?.stringValue, let secret = document["SecretAccessKey"]?.stringValue else {
            throw AWSError(type: "BadCredentials", message: "the answer has no AccessKeyId and SecretAccessKey", status: nil)
        }
        return Resolved(
            credentials: SigV4.Credentials(accessKeyID: key, secretAccessKey: secret, sessionToken: document["Token"]?.stringValue),
            expiresAtMs: document["Expiration"]?.stringValue.flatMap(RFC3339.parse), source: source)
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}
