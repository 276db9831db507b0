import SentinelJSON

/// What a detector found.
public enum FindingType: String, Sendable, Hashable, CaseIterable, Comparable {
    case bufferDrop = "buffer_drop"
    case bufferStarvation = "buffer_starvation"
    case startupDelay = "startup_delay"
    /// A seek that took long to resume playback (seek request to playing).
    case slowSeek = "slow_seek"
    /// Many viewers of one cohort (edge, content, ...) at once: a `cohorts.incidents` rule.
    case incident

    public static func < (lhs: FindingType, rhs: FindingType) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// An episode is `firing` when it starts and `resolved` when it ends.
public enum FindingStatus: String, Sendable, Hashable, CaseIterable {
    case firing
    case resolved
}

public enum Severity: String, Sendable, Hashable, CaseIterable, Comparable {
    case warning
    case critical

    public static func < (lhs: Severity, rhs: Severity) -> Bool { lhs == .warning && rhs == .critical }
}

/// A detector's finding, as every sink writes it and the CLI prints it.
///
/// `id` is derived from the session, the type and the episode start, so replaying the same
/// records produces the same ids and idempotent sinks absorb repeats.
public struct Finding: Sendable, Hashable {
    public var id: String
    public var type: FindingType
    public var status: FindingStatus
    public var severity: Severity
    public var sessionID: String
    public var contentID: String?
    public var edgeLocation: String?
    /// Event time (ms) the episode started.
    public var startedAt: Int64
    /// Event time (ms) of the record or watermark that produced this finding.
    public var detectedAt: Int64
    public var summary: String
    /// Detector-specific facts, in a stable order.
    public var details: [(key: String, value: JSONValue)]

    public init(
        type: FindingType, status: FindingStatus, severity: Severity, sessionID: String, contentID: String?,
        edgeLocation: String?, startedAt: Int64, detectedAt: Int64, summary: String,
        details: [(key: String, value: JSONValue)]
    ) {
        self.id = FindingID.make(sessionID: sessionID, type: type, startedAt: startedAt)
        self.type = type
        self.status = status
        self.severity = severity
        self.sessionID = sessionID
        self.contentID = contentID
        self.edgeLocation = edgeLocation
        self.startedAt = startedAt
        self.detectedAt = detectedAt
        self.summary = summary
        self.details = details
    }

    public static func == (lhs: Finding, rhs: Finding) -> Bool { lhs.jsonValue == rhs.jsonValue }
    public func hash(into hasher: inout Hasher) { hasher.combine(jsonValue) }

    /// A detail by key.
    public func detail(_ key: String) -> JSONValue? { details.first(where: { $0.key == key })?.value }

    /// The finding in the documented JSON shape.
    public var jsonValue: JSONValue {
        .object([
            ("id", .string(id)),
            ("type", .string(type.rawValue)),
            ("status", .string(status.rawValue)),
            ("severity", .string(severity.rawValue)),
            // An incident is about a cohort, not one session.
            ("session_id", sessionID.isEmpty ? .null : .string(sessionID)),
            ("content_id", contentID.map(JSONValue.string) ?? .null),
            ("edge_location", edgeLocation.map(JSONValue.string) ?? .null),
            ("started_at", .string(RFC3339.format(milliseconds: startedAt))),
            ("detected_at", .string(RFC3339.format(milliseconds: detectedAt))),
            ("summary", .string(summary)),
            ("details", .object(details)),
        ])
    }

    /// One line of JSON, without a newline.
    public var jsonLine: String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(512)
        writeJSON(into: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// `jsonValue` as JSON text appended to `out`, written field by field (the text
    /// `JSONWriter` gives for `jsonValue`, without building the value or formatting Strings).
    public func writeJSON(into out: inout [UInt8]) {
        func key(_ text: StaticString) { out.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount)) }
        func string(_ value: String?) {
            if let value { JSONWriter.writeString(value, into: &out) } else { key("null") }
        }
        key(#"{"id":"#)
        string(id)
        key(#","type":"#)
        string(type.rawValue)
        key(#","status":"#)
        string(status.rawValue)
        key(#","severity":"#)
        string(severity.rawValue)
        key(#","session_id":"#)
        string(sessionID.isEmpty ? nil : sessionID)
        key(#","content_id":"#)
        string(contentID)
        key(#","edge_location":"#)
        string(edgeLocation)
        key(#","started_at":""#)
        RFC3339.append(milliseconds: startedAt, to: &out)
        key(#"","detected_at":""#)
        RFC3339.append(milliseconds: detectedAt, to: &out)
        key(#"","summary":"#)
        string(summary)
        key(#","details":"#)
        JSONWriter.write(.object(details), into: &out)
        key("}")
    }
}

/// Deterministic finding ids: FNV-1a (128-bit) over session, type and episode start.
public enum FindingID {
    public static func make(sessionID: String, type: FindingType, startedAt: Int64) -> String {
        var hash = FNV1a128()
        hash.mix(text: sessionID)
        hash.mix(0)
        hash.mix(text: type.rawValue)
        hash.mix(0)
        // The decimal digits of startedAt, most significant first, without formatting a String.
        JSONWriter.forEachDecimalByte(of: startedAt) { hash.mix($0) }
        return hash.hex
    }
}

/// 128-bit FNV-1a: stable ids from stable parts (finding ids, notification event ids).
public struct FNV1a128: Sendable {
    private var hash: UInt128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d
    private static let prime: UInt128 = 0x0000_0000_0100_0000_0000_0000_0000_013B

    public init() {}

    /// The hash of the parts, each followed by a zero byte, as 32 hex digits.
    public static func hex(of parts: [String]) -> String {
        var hash = FNV1a128()
        for part in parts {
            hash.mix(text: part)
            hash.mix(0)
        }
        return hash.hex
    }

    public mutating func mix(_ byte: UInt8) {
        hash ^= UInt128(byte)
        hash = hash &* Self.prime
    }

    /// Mixes the UTF-8 bytes of `text`, read contiguously.
    public mutating func mix(text: String) {
        var text = text
        text.withUTF8 { for b in $0 { mix(b) } }
    }

    /// 32 lowercase hex digits.
    public var hex: String {
        String(unsafeUninitializedCapacity: 32) { buffer in
            for i in 0..<32 {
                let nibble = UInt8(truncatingIfNeeded: hash >> UInt128(124 - 4 * i)) & 0xF
                buffer[i] = nibble < 10 ? UInt8(ascii: "0") &+ nibble : UInt8(ascii: "a") &+ (nibble &- 10)
            }
            return 32
        }
    }
}
