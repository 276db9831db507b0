import SentinelJSON

/// One key of a payload, in wire order.
public struct CMCDEntry: Sendable, Hashable {
    public var key: String
    public var value: SFMember
    /// False when a reserved key carries a value of the wrong type: the typed views ignore
    /// it, and it is listed in `CMCDPayload.ignored`.
    public var isValid: Bool
    public init(key: String, value: SFMember, isValid: Bool = true) {
        self.key = key
        self.value = value
        self.isValid = isValid
    }
}

/// A key the decoder dropped, and why (the rest of the payload is kept).
public struct CMCDIgnoredKey: Sendable, Hashable, CustomStringConvertible {
    public var key: String
    public var reason: String
    public var description: String { "\(key): \(reason)" }
    public init(key: String, reason: String) {
        self.key = key
        self.reason = reason
    }
}

/// A numeric key that v2 sends as an inner list with object-type parameters
/// (`bl=(2100;v 1800;a)`) and v1 as a single integer (`bl=2100`).
public struct CMCDMeasure: Sendable, Hashable {
    public struct Component: Sendable, Hashable {
        public var value: Int64
        public var objectType: CMCDObjectType?
    }

    // The common single value is stored inline: no allocation per record.
    private var first: Component?
    private var rest: [Component]

    public init(components: [Component]) {
        first = components.first
        rest = Array(components.dropFirst())
    }

    init(single: Component) {
        first = single
        rest = []
    }

    public var components: [Component] { first.map { [$0] + rest } ?? [] }

    /// The value for one object type: the component tagged with it, else the only
    /// untagged component, else the smallest (the track that limits playback).
    public func value(for objectType: CMCDObjectType?) -> Int64? {
        guard let first else { return nil }
        if rest.isEmpty { return first.value }
        if let objectType {
            if first.objectType == objectType { return first.value }
            if let tagged = rest.first(where: { $0.objectType == objectType }) { return tagged.value }
        }
        return rest.reduce(first.value) { min($0, $1.value) }
    }

    /// The largest component (for cumulative counters such as `bsa`).
    public var maximum: Int64? {
        guard let first else { return nil }
        return rest.reduce(first.value) { max($0, $1.value) }
    }
}

/// Why a payload as a whole could not be decoded.
public enum CMCDDecodingError: Error, Sendable, Equatable, CustomStringConvertible {
    case syntax(SFParseError)
    case unsupportedVersion(Int64)
    case noCMCD(String)
    case invalidInput(String)

    public var description: String {
        switch self {
        case .syntax(let e): return "malformed CMCD: \(e)"
        case .unsupportedVersion(let v): return "unsupported CMCD version \(v) (this decoder understands 1 and 2)"
        case .noCMCD(let why): return why
        case .invalidInput(let why): return why
        }
    }
}

/// A decoded CMCD payload: every key in wire order, plus typed views of the keys the
/// detectors and sinks use.
///
/// A reserved key whose value has the wrong type is ignored by the typed views (and listed
/// in `ignored`) without discarding the rest; it stays in `entries`, marked invalid, so the
/// wire content can still be shown. A `v` above 2 rejects the whole payload, as
/// CTA-5004-A requires.
public struct CMCDPayload: Sendable, Hashable {
    public private(set) var entries: [CMCDEntry] = []
    public private(set) var ignored: [CMCDIgnoredKey] = []

    /// `v`; 1 when absent.
    public private(set) var version: Int = 1
    public private(set) var sessionID: String?
    public private(set) var contentID: String?
    public private(set) var objectType: CMCDObjectType?
    public private(set) var streamingFormat: String?
    public private(set) var streamType: String?
    public private(set) var state: CMCDPlayerState?
    public private(set) var event: String?
    public private(set) var startup = false
    public private(set) var bufferStarvation = false
    public private(set) var backgrounded = false
    public private(set) var nonRendered = false
    public private(set) var bufferLength: CMCDMeasure?
    public private(set) var encodedBitrate: CMCDMeasure?
    public private(set) var topBitrate: CMCDMeasure?
    public private(set) var measuredThroughput: CMCDMeasure?
    public private(set) var playheadBitrate: CMCDMeasure?
    public private(set) var targetBufferLength: CMCDMeasure?
    public private(set) var starvationCount: CMCDMeasure?
    public private(set) var starvationDuration: CMCDMeasure?
    public private(set) var starvationDurationTotal: CMCDMeasure?
    public private(set) var objectDuration: Int64?
    public private(set) var deadline: Int64?
    public private(set) var requestedMaxThroughput: Int64?
    public private(set) var mediaStartDelay: Int64?
    public private(set) var playheadTime: Int64?
    public private(set) var sequenceNumber: Int64?
    public private(set) var timestamp: Int64?
    public private(set) var liveLatency: Int64?
    public private(set) var droppedFrames: Int64?
    public private(set) var playbackRate: Double?
    /// Player error codes (`ec`).
    public var errorCodes: [String] { self["ec"].map(Self.strings) ?? [] }
    /// Next object requests (`nor`), as paths.
    public var nextObjectRequests: [String] { self["nor"].map(Self.strings) ?? [] }

    public init() {}

    /// Builds a payload from parsed dictionary members, validating each reserved key's type.
    public init(members: [SFDictionaryMember], ignored alreadyIgnored: [CMCDIgnoredKey] = []) throws(CMCDDecodingError) {
        ignored = alreadyIgnored
        // `v` decides how some keys read, and keys may come in any order: find it first.
        if let v = members.last(where: { $0.key == "v" }) {
            if case .item(let item) = v.value, case .integer(let n) = item.value {
                if n > 2 { throw .unsupportedVersion(n) }
                if n >= 1 { version = Int(n) }
            }
        }
        entries = members
        for i in entries.indices {
            let code = CMCDKeys.packedCode(entries[i].key)
            switch CMCDPayload.normalize(key: entries[i].key, code: code, member: entries[i].value, version: version) {
            case .keep:
                break
            case .replace(let value):
                entries[i].value = value
            case .invalid(let reason):
                entries[i].isValid = false
                ignored.append(CMCDIgnoredKey(key: entries[i].key, reason: reason))
                continue
            }
            if let code { assignTyped(code: code, value: entries[i].value) }
        }
    }

    /// Parses a CMCD dictionary (the payload as it is once transport encoding is removed).
    public init(raw: String, limits: SFDictionaryParser.Limits = .init()) throws(CMCDDecodingError) {
        let members: [SFDictionaryMember]
        do { members = try SFDictionaryParser.parse(raw, limits: limits) } catch { throw .syntax(error) }
        try self.init(members: members)
    }

    /// Parses a CMCD dictionary from bytes.
    public init(rawBytes: UnsafeBufferPointer<UInt8>, limits: SFDictionaryParser.Limits = .init()) throws(CMCDDecodingError) {
        let members: [SFDictionaryMember]
        do { members = try SFDictionaryParser.parse(bytes: rawBytes, limits: limits) } catch { throw .syntax(error) }
        try self.init(members: members)
    }

    /// The valid value of a key.
    public subscript(key: String) -> SFMember? {
        entries.last(where: { $0.key == key && $0.isValid })?.value
    }

    public var isEmpty: Bool { entries.isEmpty }

    /// Up-converts v1 forms to v2 (single integers to one-element lists, `nor` strings to
    /// lists), as CML's `convertToLatest` does. `v` itself is left as sent.
    public func convertedToLatest() -> CMCDPayload {
        var copy = self
        copy.entries = entries.map { entry in
            guard entry.isValid, let kind = CMCDKeys.kind(of: entry.key), case .item(let item) = entry.value else { return entry }
            switch kind {
            case .integerList, .objectRequests, .stringList:
                return CMCDEntry(key: entry.key, value: .innerList([item], parameters: []), isValid: true)
            default:
                return entry
            }
        }
        return copy
    }

    // MARK: - Validation

    /// What validation decided for one key.
    enum Verdict {
        case keep
        case replace(SFMember)
        case invalid(String)
    }

    static func normalize(key: String, code: UInt64?, member: SFMember, version: Int) -> Verdict {
        guard let code, let kind = CMCDKeys.kinds[code] else { return .keep }  // custom or unknown: kept as sent
        switch kind {
        case .integerList:
            switch member {
            case .item(let item):
                if case .integer = item.value { return .keep }
            case .innerList(let items, _):
                if items.allSatisfy({ if case .integer = $0.value { true } else { false } }) { return .keep }
            }
            return .invalid("expected an integer or an inner list of integers")
        case .integer:
            if case .item(let item) = member, case .integer = item.value { return .keep }
            return .invalid("expected an integer")
        case .decimal:
            if case .item(let item) = member {
                switch item.value {
                case .integer, .decimal: return .keep
                default: break
                }
            }
            return .invalid("expected a decimal")
        case .boolean:
            if case .item(let item) = member {
                switch item.value {
                case .boolean: return .keep
                // Lenient: early players send `bs=true` / `su=false`.
                case .token(let t), .string(let t):
                    if t == "true" { return .replace(.item(SFItem(.boolean(true), parameters: item.parameters))) }
                    if t == "false" { return .replace(.item(SFItem(.boolean(false), parameters: item.parameters))) }
                default: break
                }
            }
            return .invalid("expected a boolean")
        case .string, .stringOrInteger:
            if case .item(let item) = member {
                if case .string(let s) = item.value {
                    if let limit = maxLength(of: key), s.utf8.count > limit {
                        return .invalid("longer than \(limit) characters")
                    }
                    return .keep
                }
                if kind == .stringOrInteger, case .integer = item.value { return .keep }
            }
            return .invalid("expected a string")
        case .token:
            if case .item(let item) = member {
                let text: String?
                switch item.value {
                case .token(let t): text = t
                case .string(let s): text = s  // lenient: quoted tokens (`sta="s"`) from pre-CML players
                default: text = nil
                }
                if let text {
                    if let allowed = CMCDKeys.allowedTokens(for: key), !allowed.contains(text) {
                        return .invalid("'\(text.prefix(16))' is not a valid \(key) token")
                    }
                    return .replace(.item(SFItem(.token(text), parameters: item.parameters)))
                }
            }
            return .invalid("expected a token")
        case .stringList:
            switch member {
            case .innerList(let items, _):
                if items.allSatisfy({ if case .string = $0.value { true } else { false } }) { return .keep }
            case .item(let item):
                if case .string = item.value { return .replace(.innerList([item], parameters: [])) }  // lenient
            }
            return .invalid("expected an inner list of strings")
        case .objectRequests:
            switch member {
            case .innerList(let items, _):
                if items.allSatisfy({ if case .string = $0.value { true } else { false } }) { return .keep }
            case .item(let item):
                if case .string(let s) = item.value {
                    // v1 `nor` is URL-encoded inside the quotes; hand back the path itself.
                    if version == 1 {
                        return .replace(.item(SFItem(.string(PercentDecoding.decode(s, plusAsSpace: false)), parameters: item.parameters)))
                    }
                    return .keep
                }
            }
            return .invalid("expected a string or an inner list of strings")
        }
    }

    static func maxLength(of key: String) -> Int? {
        switch key {
        case "sid": return 64
        case "cid", "h": return 128
        case "cen": return 64
        default: return nil
        }
    }

    private static func measure(_ member: SFMember) -> CMCDMeasure {
        switch member {
        case .item(let item):
            if case .integer(let n) = item.value {
                return CMCDMeasure(single: .init(value: n, objectType: objectTypeParameter(item.parameters)))
            }
            return CMCDMeasure(components: [])
        case .innerList(let items, _):
            if items.count == 1, case .integer(let n) = items[0].value {
                return CMCDMeasure(single: .init(value: n, objectType: objectTypeParameter(items[0].parameters)))
            }
            return CMCDMeasure(components: items.compactMap { item in
                guard case .integer(let n) = item.value else { return nil }
                return .init(value: n, objectType: objectTypeParameter(item.parameters))
            })
        }
    }

    private static func objectTypeParameter(_ parameters: [SFParameter]) -> CMCDObjectType? {
        for p in parameters {
            if case .boolean(true) = p.value, let ot = CMCDObjectType(rawValue: p.key) { return ot }
            if p.key == "ot", case .token(let t) = p.value, let ot = CMCDObjectType(rawValue: t) { return ot }
        }
        return nil
    }

    static func strings(_ member: SFMember) -> [String] {
        switch member {
        case .item(let item):
            if case .string(let s) = item.value { return [s] }
            return []
        case .innerList(let items, _):
            return items.compactMap { if case .string(let s) = $0.value { s } else { nil } }
        }
    }

    private mutating func assignTyped(code: UInt64, value: SFMember) {
        var scalar: SFBareItem? {
            if case .item(let item) = value { return item.value }
            return nil
        }
        var integer: Int64? {
            if case .integer(let n)? = scalar { return n }
            return nil
        }
        var text: String? {
            switch scalar {
            case .string(let s)?, .token(let s)?: return s
            default: return nil
            }
        }
        var flag: Bool {
            if case .boolean(let b)? = scalar { return b }
            return false
        }
        switch code {
        case 0x736964 /* sid */: sessionID = text
        case 0x636964 /* cid */: contentID = text
        case 0x6F74 /* ot */: objectType = text.flatMap(CMCDObjectType.init(rawValue:))
        case 0x7366 /* sf */: streamingFormat = text
        case 0x7374 /* st */: streamType = text
        case 0x737461 /* sta */: state = text.flatMap(CMCDPlayerState.init(rawValue:))
        case 0x65 /* e */: event = text
        case 0x7375 /* su */: startup = flag
        case 0x6273 /* bs */: bufferStarvation = flag
        case 0x6267 /* bg */: backgrounded = flag
        case 0x6E72 /* nr */: nonRendered = flag
        case 0x626C /* bl */: bufferLength = Self.measure(value)
        case 0x6272 /* br */: encodedBitrate = Self.measure(value)
        case 0x7462 /* tb */: topBitrate = Self.measure(value)
        case 0x6D7470 /* mtp */: measuredThroughput = Self.measure(value)
        case 0x7062 /* pb */: playheadBitrate = Self.measure(value)
        case 0x74626C /* tbl */: targetBufferLength = Self.measure(value)
        case 0x627361 /* bsa */: starvationCount = Self.measure(value)
        case 0x627364 /* bsd */: starvationDuration = Self.measure(value)
        case 0x62736461 /* bsda */: starvationDurationTotal = Self.measure(value)
        case 0x64 /* d */: objectDuration = integer
        case 0x646C /* dl */: deadline = integer
        case 0x727470 /* rtp */: requestedMaxThroughput = integer
        case 0x6D7364 /* msd */: mediaStartDelay = integer
        case 0x7074 /* pt */: playheadTime = integer
        case 0x736E /* sn */: sequenceNumber = integer
        case 0x7473 /* ts */: timestamp = integer
        case 0x6C7463 /* ltc */: liveLatency = integer
        case 0x646661 /* dfa */: droppedFrames = integer
        case 0x7072 /* pr */:
            switch scalar {
            case .integer(let n)?: playbackRate = Double(n)
            case .decimal(let d)?: playbackRate = d
            default: break
            }
        default: break
        }
    }

    // MARK: - JSON

    /// The payload as JSON: booleans as `true`/`false`, numbers as numbers, tokens and strings
    /// as strings (or `{"token": ...}` when `tokensAsObjects`), inner lists as arrays, and an
    /// item or list with parameters as `{"value": ..., "params": {...}}`.
    /// Keys with values of the wrong type are included unless `validOnly` is set.
    public func jsonValue(tokensAsObjects: Bool = false, validOnly: Bool = false) -> JSONValue {
        .object(entries.filter { !validOnly || $0.isValid }.map { ($0.key, Self.json($0.value, tokensAsObjects: tokensAsObjects)) })
    }

    static func json(_ member: SFMember, tokensAsObjects: Bool) -> JSONValue {
        switch member {
        case .item(let item):
            return json(item, tokensAsObjects: tokensAsObjects)
        case .innerList(let items, let parameters):
            let list = JSONValue.array(items.map { json($0, tokensAsObjects: tokensAsObjects) })
            if parameters.isEmpty { return list }
            return .object([("value", list), ("params", json(parameters, tokensAsObjects: tokensAsObjects))])
        }
    }

    static func json(_ item: SFItem, tokensAsObjects: Bool) -> JSONValue {
        let value = json(item.value, tokensAsObjects: tokensAsObjects)
        if item.parameters.isEmpty { return value }
        return .object([("value", value), ("params", json(item.parameters, tokensAsObjects: tokensAsObjects))])
    }

    static func json(_ parameters: [SFParameter], tokensAsObjects: Bool) -> JSONValue {
        .object(parameters.map { ($0.key, json($0.value, tokensAsObjects: tokensAsObjects)) })
    }

    static func json(_ bare: SFBareItem, tokensAsObjects: Bool) -> JSONValue {
        switch bare {
        case .integer(let n): return .int(n)
        case .decimal(let d): return .double(d)
        case .string(let s): return .string(s)
        case .token(let t): return tokensAsObjects ? .object([("token", .string(t))]) : .string(t)
        case .boolean(let b): return .bool(b)
        case .byteSequence(let b): return .string(b)
        }
    }
}
