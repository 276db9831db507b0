import Crypto
import Foundation

/// AWS Signature Version 4 (the request signing every AWS API takes, Kinesis and DynamoDB among
/// them), with no IO: the headers to add to a request so that AWS accepts it. Checked against the
/// vectors AWS publishes (its SigV4 test suite and the documented signing-key example).
public struct SigV4: Sendable {
    /// An access key, its secret, and the session token of temporary credentials.
    public struct Credentials: Sendable, Equatable {
        public var accessKeyID: String
        public var secretAccessKey: String
        public var sessionToken: String?

        public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
            self.accessKeyID = accessKeyID
            self.secretAccessKey = secretAccessKey
            self.sessionToken = sessionToken
        }
    }

    public let region: String
    public let service: String

    public init(region: String, service: String) {
        self.region = region
        self.service = service
    }

    /// The headers to add to the request (`x-amz-date`, `x-amz-security-token` with temporary
    /// credentials, and `authorization`), signing `method`, `path` (already percent-encoded as
    /// sent), `query` (name and value pairs, not yet encoded), `headers` (which must include
    /// `host`) and `body`, at `date`.
    public func sign(
        method: String, path: String, query: [(String, String)] = [], headers: [(String, String)], body: [UInt8],
        credentials: Credentials, date: Date
    ) -> [(String, String)] {
        let amzDate = Self.amzDate(date)
        var signed = headers.map { ($0.0.lowercased(), Self.trimmed($0.1)) }
        signed.append(("x-amz-date", amzDate))
        var added = [("x-amz-date", amzDate)]
        if let token = credentials.sessionToken {
            signed.append(("x-amz-security-token", token))
            added.append(("x-amz-security-token", token))
        }
        let parts = canonicalRequest(method: method, path: path, query: query, headers: signed, body: body)
        let scope = "\(amzDate.prefix(8))/\(region)/\(service)/aws4_request"
        let stringToSign = "AWS4-HMAC-SHA256\n\(amzDate)\n\(scope)\n\(Self.hex(SHA256.hash(data: Array(parts.request.utf8))))"
        let key = Self.signingKey(secret: credentials.secretAccessKey, date: String(amzDate.prefix(8)), region: region, service: service)
        let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: key))
        added.append(("authorization", "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(parts.signedHeaders), Signature=\(signature)"))
        return added
    }

    /// The canonical request and its signed-header list.
    func canonicalRequest(method: String, path: String, query: [(String, String)], headers: [(String, String)], body: [UInt8]) -> (request: String, signedHeaders: String) {
        let encoded: [(name: String, value: String)] = query.map { (Self.encode($0.0), Self.encode($0.1)) }
        let sorted = encoded.sorted { a, b in a.name == b.name ? a.value < b.value : a.name < b.name }
        let canonicalQuery = sorted.map { "\($0.name)=\($0.value)" }.joined(separator: "&")
        // Headers with one name are joined by commas, in the order given.
        var merged: [String: [String]] = [:]
        for (name, value) in headers { merged[name, default: []].append(value) }
        let names = merged.keys.sorted()
        let canonicalHeaders = names.map { "\($0):\(merged[$0]!.joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")
        let payload = Self.hex(SHA256.hash(data: body))
        let request = [method, path.isEmpty ? "/" : path, canonicalQuery, canonicalHeaders, signedHeaders, payload].joined(separator: "\n")
        return (request, signedHeaders)
    }

    /// The key a day's signatures in one region and service are made with.
    static func signingKey(secret: String, date: String, region: String, service: String) -> SymmetricKey {
        var key = SymmetricKey(data: Array("AWS4\(secret)".utf8))
        for part in [date, region, service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key)))
        }
        return key
    }

    /// `YYYYMMDD'T'HHMMSS'Z'` in UTC.
    static func amzDate(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        return String(format: "%04d%02d%02dT%02d%02d%02dZ", c.year!, c.month!, c.day!, c.hour!, c.minute!, c.second!)
    }

    /// RFC 3986 percent-encoding of everything but the unreserved characters, as SigV4 wants.
    static func encode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(UnicodeScalar(byte))
            default:
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    /// A header value with its ends trimmed and inner runs of spaces made one.
    static func trimmed(_ value: String) -> String {
        value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ").trimmingCharacters(in: .whitespaces)
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        digest.map { String(format: "%02x", $0) }.joined()
    }
}
