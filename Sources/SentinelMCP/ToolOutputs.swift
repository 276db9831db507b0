import MCP
import SentinelJSON

/// The shapes of the tools' structured results, as JSON Schema (`outputSchema`): every result
/// has `status` (`success`, `not_found` or `error`, with `error` then saying why); a successful
/// one has every member its tool lists, each of the type given.
extension SentinelTools {
    /// One member of a result: `string`, `integer`, `number`, `boolean`, `object`, `finding`,
    /// `silence`, or `[T]` for an array of `T`; a `?` suffix also allows null. Optional members
    /// (absent on success too) start with `~`.
    typealias Member = (name: String, shape: String)

    /// `truncated` and `next_cursor`: every paged list has them.
    static let paged: [Member] = [("truncated", "boolean"), ("next_cursor", "string?")]

    /// The output schema of a tool whose successful result has `members`.
    static func outputSchema(_ members: [Member]) -> Value {
        var properties: [String: Value] = [
            "status": .object(["type": "string", "enum": ["success", "not_found", "error"]]),
            "error": .object(["type": "string", "description": "Why the call failed (status error)."]),
        ]
        var required: [Value] = []
        for member in members {
            let optional = member.name.hasPrefix("~")
            let name = optional ? String(member.name.dropFirst()) : member.name
            properties[name] = shape(member.shape)
            if !optional { required.append(.string(name)) }
        }
        return .object([
            "type": "object", "properties": .object(properties), "required": ["status"],
            // Only a successful result has to carry every member.
            "if": .object(["properties": .object(["status": .object(["const": "success"])])]),
            "then": .object(["required": .array(required)]),
        ])
    }

    static func shape(_ text: String) -> Value {
        if text.hasSuffix("?") {
            return .object(["anyOf": .array([shape(String(text.dropLast())), .object(["type": "null"])])])
        }
        if text.hasPrefix("["), text.hasSuffix("]") {
            return .object(["type": "array", "items": shape(String(text.dropFirst().dropLast()))])
        }
        switch text {
        case "finding": return findingSchema
        case "silence": return silenceSchema
        default: return .object(["type": .string(text)])
        }
    }

    /// A finding (an alert row) as the tools show it.
    static let findingSchema: Value = .object([
        "type": "object",
        "properties": .object([
            "id": .object(["type": "string"]), "type": .object(["type": "string"]),
            "status": .object(["type": "string", "enum": ["firing", "resolved"]]),
            "severity": .object(["type": "string", "enum": ["warning", "critical"]]),
            "session_id": .object(["type": ["string", "null"]]), "content_id": .object(["type": ["string", "null"]]),
            "edge_location": .object(["type": ["string", "null"]]), "started_at": .object(["type": "string"]),
            "detected_at": .object(["type": "string"]), "resolved_at": .object(["type": "string"]),
            "summary": .object(["type": "string"]), "details": .object(["type": "object"]),
        ]),
        "required": ["id", "type", "status", "severity", "session_id", "started_at", "detected_at", "summary", "details"],
    ])

    /// An operator's silence.
    static let silenceSchema: Value = .object([
        "type": "object",
        "properties": .object([
            "id": .object(["type": "string"]), "matchers": .object(["type": "object"]),
            "state": .object(["type": "string", "enum": ["active", "waiting", "pending", "ended", "expired"]]),
            "every": .object(["type": ["string", "null"]]), "starts_at": .object(["type": "string"]), "ends_at": .object(["type": "string"]),
            "expired_at": .object(["type": ["string", "null"]]), "created_by": .object(["type": "string"]), "comment": .object(["type": "string"]),
        ]),
        "required": ["id", "matchers", "state", "starts_at", "ends_at", "created_by"],
    ])

    /// Most bytes of one result's JSON: a larger one loses rows from its longest list, and says so.
    static let maxResultBytes = 262_144

    /// `structured` cut to `maxResultBytes`: the longest array member (or the one of
    /// `session_data`) is halved until the result fits; `truncated` becomes true, and
    /// `next_cursor` is dropped (the next page would skip what was cut: ask for a smaller
    /// `limit`), with `truncated_by_bytes` saying why. Returns whether it was cut.
    static func capped(_ structured: JSONValue, maxBytes: Int = maxResultBytes) -> (JSONValue, Bool) {
        guard JSONWriter.string(structured).utf8.count > maxBytes, case .object(var members) = structured else { return (structured, false) }
        func longestArray(_ members: [(key: String, value: JSONValue)]) -> (index: Int, count: Int)? {
            var best: (Int, Int)?
            for (i, member) in members.enumerated() {
                if case .array(let items) = member.value, items.count > (best?.1 ?? 0) { best = (i, items.count) }
            }
            return best
        }
        while JSONWriter.string(.object(members)).utf8.count > maxBytes {
            if let (i, count) = longestArray(members), count > 0, case .array(let items) = members[i].value {
                members[i].value = .array(Array(items.prefix(count / 2)))
            } else if let i = members.firstIndex(where: { $0.key == "session_data" }), case .object(var inner) = members[i].value,
                let (j, count) = longestArray(inner), count > 0, case .array(let items) = inner[j].value
            {
                inner[j].value = .array(Array(items.prefix(count / 2)))
                members[i].value = .object(inner)
            } else {
                break
            }
        }
        members.removeAll { ["truncated", "next_cursor", "truncated_by_bytes"].contains($0.key) }
        members += [("truncated", .bool(true)), ("next_cursor", .null), ("truncated_by_bytes", .int(Int64(maxBytes)))]
        return (.object(members), true)
    }
}
