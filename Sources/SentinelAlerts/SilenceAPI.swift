import Foundation
import SentinelHTTP
import SentinelJSON

/// The silences over HTTP, on the daemon's HTTP port (`/api/v1/silences`), for operators'
/// tools and chat bots. Every request needs one of `http.tokens` as a bearer token; the
/// token's name is recorded as the creator (`http:NAME`).
///
/// - `GET /api/v1/silences` (`?all=true` also those ended or expired)
/// - `GET /api/v1/silences/ID`
/// - `POST /api/v1/silences` with `{"matchers": {"edge_location": "FRA56-C2"}, "duration": "2h",
///   "comment": "...", "every": "sat,sun 02:00-04:00", "time_zone": "Europe/Berlin"}`
///   (`starts_at`/`ends_at` in RFC 3339 instead of `duration` also work): 201 with the silence
/// - `DELETE /api/v1/silences/ID`: ends it now
public struct SilenceAPI: Sendable {
    public static let mountPoint = "/api/v1/silences"
    let store: AlertStore
    let tokens: NamedTokens
    let clock: @Sendable () -> Int64

    public init(store: AlertStore, tokens: [String: String], clock: @escaping @Sendable () -> Int64 = AlertStore.nowMs) {
        self.store = store
        self.tokens = NamedTokens(tokens)
        self.clock = clock
    }

    /// The API to mount on a server.
    public var api: HTTPAPI { HTTPAPI(mountPoint: Self.mountPoint, maxBodyBytes: 16_384) { await self.handle($0) } }

    public func handle(_ request: HTTPAPI.Request) async -> HTTPAPI.Response {
        guard !tokens.isEmpty else { return Self.error(403, "the silence API is off: configure http.tokens") }
        guard let caller = tokens.name(for: request.authorization) else {
            return Self.error(401, "a bearer token from http.tokens is required", headers: [("WWW-Authenticate", "Bearer realm=\"cmcd-sentinel\"")])
        }
        let now = clock()
        do {
            switch (request.method, request.path) {
            case ("GET", ""):
                let all = request.query["all"] == "true"
                let silences = try await store.silences(activeAt: all ? nil : now)
                return Self.ok(200, [("silences", .array(silences.map { $0.jsonValue(at: now) }))])
            case ("POST", ""):
                let silence: Silence
                do { silence = try Self.silence(from: request.body, createdBy: "http:" + caller, now: now) } catch { return Self.error(400, "\(error)") }
                try await store.addSilence(silence)
                return Self.ok(201, [("silence", silence.jsonValue(at: now))])
            case ("GET", let id) where Self.isID(id):
                guard let silence = try await store.silence(id: id) else { return Self.error(404, "no silence \(id)") }
                return Self.ok(200, [("silence", silence.jsonValue(at: now))])
            case ("DELETE", let id) where Self.isID(id):
                guard try await store.expireSilence(id: id, now: now) else { return Self.error(404, "no active silence \(id)") }
                return Self.ok(200, [("id", .string(id)), ("expired", .bool(true))])
            case ("GET", _), ("DELETE", _), ("POST", _):
                return Self.error(404, "no such resource")
            default:
                return Self.error(405, "method not allowed")
            }
        } catch {
            return Self.error(503, "the alerts table cannot be reached: \(error)")
        }
    }

    /// A silence from a POST body (hostile: bounded, checked, never interpolated).
    static func silence(from body: [UInt8], createdBy: String, now: Int64) throws -> Silence {
        let json: JSONValue
        do { json = try JSONParser.parse(String(decoding: body, as: UTF8.self), limits: .init(maxDepth: 4, maxElements: 64)) } catch {
            throw SQLError("the body is not JSON: \(error)")
        }
        guard let members = json.objectMembers else { throw SQLError("the body must be a JSON object") }
        let known: Set<String> = ["matchers", "duration", "starts_at", "ends_at", "comment", "every", "time_zone"]
        if let unknown = members.first(where: { !known.contains($0.key) }) {
            throw SQLError("unknown member '\(unknown.key.prefix(40))' (\(known.sorted().joined(separator: ", ")))")
        }
        func text(_ key: String) throws -> String? {
            guard let value = json[key], value != .null else { return nil }
            guard let s = value.stringValue else { throw SQLError("\(key) must be a string") }
            return s
        }
        var matchers: [String: String] = [:]
        for (key, value) in json["matchers"]?.objectMembers ?? [] {
            guard let s = value.stringValue else { throw SQLError("matchers.\(key.prefix(40)) must be a string") }
            matchers[key] = s
        }
        var startsAt = now
        if let s = try text("starts_at") {
            guard let t = RFC3339.parse(s) else { throw SQLError("starts_at must be an RFC 3339 time") }
            startsAt = max(t, now)
        }
        let endsAt: Int64
        switch (try text("duration"), try text("ends_at")) {
        case (let d?, nil):
            guard let length = Silence.milliseconds(d) else { throw SQLError("duration '\(d.prefix(30))' is not a duration (90s, 30m, 2h, 1d)") }
            endsAt = startsAt + length
        case (nil, let e?):
            guard let t = RFC3339.parse(e) else { throw SQLError("ends_at must be an RFC 3339 time") }
            endsAt = t
        default:
            throw SQLError("give either duration or ends_at")
        }
        guard endsAt - startsAt <= 366 * 86_400_000 else { throw SQLError("a silence lasts at most 366 days") }
        let recurrence = try (try text("every")).map { try MaintenanceWindow($0, timeZone: try text("time_zone") ?? "UTC") }
        return try Silence(
            matchers: matchers, startsAt: startsAt, endsAt: endsAt, createdBy: createdBy, comment: try text("comment") ?? "", createdAt: now,
            recurrence: recurrence)
    }

    static func isID(_ text: String) -> Bool {
        text.hasPrefix("sil_") && text.utf8.count <= 64 && text.utf8.allSatisfy { $0 == UInt8(ascii: "_") || ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x7a) }
    }

    static func ok(_ status: Int, _ members: [(String, JSONValue)]) -> HTTPAPI.Response {
        HTTPAPI.Response(status: status, body: JSONWriter.string(.object(members)) + "\n")
    }

    static func error(_ status: Int, _ message: String, headers: [(String, String)] = []) -> HTTPAPI.Response {
        HTTPAPI.Response(status: status, body: JSONWriter.string(.object([("error", .string(message))])) + "\n", headers: headers)
    }
}

extension AlertStore {
    /// One silence by id, whatever its state.
    public func silence(id: String) async throws -> Silence? {
        try await silenceRows(
            "SELECT \(Self.silenceColumns) FROM silences WHERE id = $1", [.text(id)]
        ).first
    }
}
