import CMCDDetection
import Crypto
import Foundation
import SentinelAlerts
import SentinelJSON

/// Which findings notify which endpoint, and what is sent: the rules' routes applied to
/// findings, giving outbox entries with stable event ids and their JSON payloads.
public struct WebhookRouting: Sendable {
    public var routes: [DetectionRules.Route]
    /// Names of the configured endpoints; routes naming another endpoint are skipped (and
    /// reported once at start by `unknownEndpoints`).
    public var endpoints: Set<String>

    public init(routes: [DetectionRules.Route], endpoints: Set<String>) {
        self.routes = routes
        self.endpoints = endpoints
    }

    /// Routes whose webhook is not configured.
    public var unknownEndpoints: [String] { routes.filter { !endpoints.contains($0.webhook) }.map { "\($0.name) -> \($0.webhook)" } }

    /// The notifications the findings call for. A firing finding gives a `firing` entry on
    /// every route it matches (the same id for a repeat or an escalation, so one per episode);
    /// a resolved finding gives a `resolved` entry on routes with `send_resolved`, which the store
    /// keeps only where the episode's `firing` one exists.
    public func plan(_ findings: [Finding], now: Int64) -> [OutboxEntry] {
        var entries: [OutboxEntry] = []
        for finding in findings {
            for route in routes where endpoints.contains(route.webhook) {
                let kind: OutboxEntry.Kind
                switch finding.status {
                case .firing:
                    guard route.matches(finding) else { continue }
                    kind = .firing
                case .resolved:
                    guard route.sendResolved, route.types.isEmpty || route.types.contains(finding.type) else { continue }
                    kind = .resolved
                }
                let id = Self.eventID(alertID: finding.id, route: route.name, kind: kind)
                entries.append(
                    OutboxEntry(
                        id: id, alertID: finding.id, route: route.name, endpoint: route.webhook, kind: kind,
                        payload: Self.payload(eventID: id, kind: kind, route: route.name, finding: finding.jsonValue, now: now),
                        delayMs: kind == .firing ? route.groupWaitMs : 0, groupKey: Self.groupKey(route: route, kind: kind, finding: finding)))
            }
        }
        return entries
    }

    /// The group a finding's notification joins on a route with `group_by` (nil without):
    /// 32 hex digits from the route, the kind and the finding's values of the fields.
    public static func groupKey(route: DetectionRules.Route, kind: OutboxEntry.Kind, finding: Finding) -> String? {
        guard !route.groupBy.isEmpty else { return nil }
        return FNV1a128.hex(of: [route.name, kind.rawValue] + route.groupBy.flatMap { [$0.rawValue, $0.value(of: finding) ?? "\u{0}"] })
    }

    /// A group's webhook body: `{"event_id","type":"group.firing"|"group.resolved","timestamp",
    /// "route","group":{field: value},"count","findings":[...]}`, the findings as in a single one.
    public static func groupPayload(
        eventID: String, kind: String, route: DetectionRules.Route, findings: [JSONValue], now: Int64
    ) -> String {
        let first = findings.first ?? .object([])
        return JSONWriter.string(
            .object([
                ("event_id", .string(eventID)), ("type", .string("group.\(kind)")), ("timestamp", .string(RFC3339.format(milliseconds: now))),
                ("route", .string(route.name)), ("group", .object(route.groupBy.map { ($0.rawValue, first[$0.rawValue] ?? .null) })),
                ("count", .int(Int64(findings.count))), ("findings", .array(findings)),
            ]))
    }

    /// `evt_` and 32 hex digits from the episode, route and kind (and the repeat number).
    public static func eventID(alertID: String, route: String, kind: OutboxEntry.Kind, sequence: Int = 0) -> String {
        "evt_" + FNV1a128.hex(of: [alertID, route, kind.rawValue, String(sequence)])
    }

    /// The webhook body: `{"event_id","type","timestamp","route","finding":{...}}` where `type`
    /// is `finding.firing`, `finding.resolved`, `finding.repeat` or `finding.update` (an
    /// incident's, with `folded` added when it is sent: the viewers' notifications it took in).
    public static func payload(eventID: String, kind: OutboxEntry.Kind, route: String, finding: JSONValue, now: Int64) -> String {
        JSONWriter.string(
            .object([
                ("event_id", .string(eventID)), ("type", .string("finding.\(kind.rawValue)")),
                ("timestamp", .string(RFC3339.format(milliseconds: now))), ("route", .string(route)), ("finding", finding),
            ]))
    }
}

/// Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one
/// per secret (several during a rotation), separated by spaces.
public enum WebhookSignature {
    /// The key bytes of a secret: `whsec_` + base64 is decoded, any other text is used as is.
    public static func key(_ secret: String) -> [UInt8] {
        if secret.hasPrefix("whsec_"), let data = Data(base64Encoded: String(secret.dropFirst(6))) { return Array(data) }
        return Array(secret.utf8)
    }

    public static func sign(id: String, timestamp: Int64, body: [UInt8], secrets: [String]) -> String {
        var message = Array("\(id).\(timestamp).".utf8)
        message.append(contentsOf: body)
        return secrets.map { secret in
            let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key(secret)))
            return "v1," + Data(mac).base64EncodedString()
        }.joined(separator: " ")
    }
}
