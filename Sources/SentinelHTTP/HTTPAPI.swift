/// A small JSON API mounted on one of the servers (the daemon's `/metrics` port), kept free
/// of any HTTP framework so that the module that owns the data (the alerts table) can serve it
/// and be tested without one.
public struct HTTPAPI: Sendable {
    /// One request, its body already read (and bounded by `maxBodyBytes`).
    public struct Request: Sendable {
        public var method: String
        /// The path below the mount point, without a leading slash (`""`, `"sil_1234"`).
        public var path: String
        public var query: [String: String]
        public var authorization: String?
        public var body: [UInt8]

        public init(method: String, path: String, query: [String: String] = [:], authorization: String? = nil, body: [UInt8] = []) {
            self.method = method
            self.path = path
            self.query = query
            self.authorization = authorization
            self.body = body
        }
    }

    /// A JSON answer.
    public struct Response: Sendable, Equatable {
        public var status: Int
        public var body: String
        /// Extra headers (e.g. `WWW-Authenticate` on 401).
        public var headers: [(String, String)]

        public init(status: Int, body: String, headers: [(String, String)] = []) {
            self.status = status
            self.body = body
            self.headers = headers
        }

        public static func == (a: Response, b: Response) -> Bool {
            a.status == b.status && a.body == b.body && a.headers.map(\.0) == b.headers.map(\.0) && a.headers.map(\.1) == b.headers.map(\.1)
        }
    }

    /// Where it is mounted, e.g. `/api/v1/silences`.
    public var mountPoint: String
    /// Larger bodies get 413 before the handler runs.
    public var maxBodyBytes: Int
    public var handle: @Sendable (Request) async -> Response

    public init(mountPoint: String, maxBodyBytes: Int = 65_536, handle: @escaping @Sendable (Request) async -> Response) {
        self.mountPoint = mountPoint
        self.maxBodyBytes = maxBodyBytes
        self.handle = handle
    }
}

/// Named bearer tokens (`http.tokens`): which name, if any, a request's `Authorization` carries.
public struct NamedTokens: Sendable {
    public var tokens: [(name: String, token: String)]

    public init(_ tokens: [String: String]) {
        self.tokens = tokens.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    public var isEmpty: Bool { tokens.isEmpty }

    /// The name of the token the header carries (every token compared, in constant time each).
    public func name(for authorization: String?) -> String? {
        var found: String?
        for (name, token) in tokens where BearerToken.matches(authorization, token: token) { found = found ?? name }
        return found
    }
}

/// A token bucket per key (a bearer token's name): `perMinute` requests a minute, in bursts of
/// up to as many. Pure: the caller holds it (in a `Mutex`) and gives the time.
public struct RateLimiter: Sendable {
    public let perMinute: Int
    private var buckets: [String: (tokens: Double, at: Int64)] = [:]

    public init(perMinute: Int) { self.perMinute = max(perMinute, 1) }

    /// Takes one request of `key` at `nowMs`: nil when admitted, else the seconds to wait.
    public mutating func admit(_ key: String, nowMs: Int64) -> Int? {
        let rate = Double(perMinute) / 60_000
        var bucket = buckets[key] ?? (Double(perMinute), nowMs)
        bucket.tokens = min(Double(perMinute), bucket.tokens + Double(max(nowMs - bucket.at, 0)) * rate)
        bucket.at = nowMs
        defer { buckets[key] = bucket }
        guard bucket.tokens >= 1 else { return Int(((1 - bucket.tokens) / rate / 1_000).rounded(.up)) }
        bucket.tokens -= 1
        return nil
    }
}
