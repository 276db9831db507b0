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

    // The common single value is stored inline: no allocation (nor reference count) per record.
    private var first: Component?
    private var rest: [Component]?

    public init(components: [Component]) {
        first = components.first
        rest = components.count > 1 ? Array(components.dropFirst()) : nil
    }

    init(single: Component) {
        first = single
        rest = nil
    }

    /// A measure from its first component and, for an inner list, the others.
    init(first: Component, rest: [Component]?) {
        self.first = first
        self.rest = rest.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The first component, and the others (nil for a single value).
    var firstComponent: Component? { first }
    var otherComponents: [Component]? { rest }

    public var components: [Component] { first.map { [$0] + (rest ?? []) } ?? [] }

    /// The value for one object type: the component tagged with it, else the only
    /// untagged component, else the smallest (the track that limits playback).
    public func value(for objectType: CMCDObjectType?) -> Int64? {
        guard let first else { return nil }
        guard let rest else { return first.value }
        if let objectType {
            if first.objectType == objectType { return first.value }
            if let tagged = rest.first(where: { $0.objectType == objectType }) { return tagged.value }
        }
        return rest.reduce(first.value) { min($0, $1.value) }
    }

    /// The largest component (for cumulative counters such as `bsa`).
    public var maximum: Int64? {
        guard let first else { return nil }
        return rest?.reduce(first.value) { max($0, $1.value) } ?? first.value
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
    /// Everything a payload holds, behind one reference so that passing samples around
    /// copies a pointer, not some 700 bytes of fields.
    struct Fields: Sendable {
        /// The full view when it was built (nil for a typed-only decode, which keeps its source).
        var full: FullView?
        /// Bytes of dictionary text a typed-only decode keeps after the fields (in the same
        /// allocation), to rebuild the full view on demand; -1 when there is none.
        var sourceCount = -1
        /// The kept text is a `CMCD=` query value as it stood (`init(typedFromQueryValue:)`),
        /// to be percent-decoded when read.
        var sourceIsQueryEncoded = false
        var version: Int = 1
        var sessionID: String?
        /// Where the session id lies in the kept source text, when a fast path found it as
        /// a plain string: no `String` is made unless asked for. At most one of this and
        /// `sessionID` is set.
        var sessionIDInSource: Range<Int32>?
        var contentID: String?
        var objectType: CMCDObjectType?
        /// `sf` and `st` as numbers in their keys' token tables (`CMCDKeys.TokenTable`): no
        /// string per payload.
        var streamingFormat: UInt8 = 0
        var streamType: UInt8 = 0
        var state: CMCDPlayerState?
        var event: String?
        var startup: Bool = false
        var bufferStarvation: Bool = false
        var backgrounded: Bool = false
        var nonRendered: Bool = false
        // Measures keep their first component here; the others, which only v2 inner lists
        // have, are in `otherComponents` (so that the usual payload holds no arrays).
        var bufferLength: CMCDMeasure.Component?
        var encodedBitrate: CMCDMeasure.Component?
        var topBitrate: CMCDMeasure.Component?
        var measuredThroughput: CMCDMeasure.Component?
        var playheadBitrate: CMCDMeasure.Component?
        var targetBufferLength: CMCDMeasure.Component?
        var starvationCount: CMCDMeasure.Component?
        var starvationDuration: CMCDMeasure.Component?
        var starvationDurationTotal: CMCDMeasure.Component?
        /// The components after the first of measures sent as inner lists, by key code.
        var otherComponents: [(code: UInt64, components: [CMCDMeasure.Component])]?
        var objectDuration: Int64?
        var deadline: Int64?
        var requestedMaxThroughput: Int64?
        var mediaStartDelay: Int64?
        var playheadTime: Int64?
        var sequenceNumber: Int64?
        var timestamp: Int64?
        var liveLatency: Int64?
        var droppedFrames: Int64?
        var playbackRate: Double?
        /// Members left out because they could not be read (syntax, wrong type, implausible
        /// value), with why; nil when there were none.
        var droppedMembers: [CMCDIgnoredKey]?
    }

    /// Every key in wire order, and the keys validation dropped.
    struct FullView: Sendable {
        var entries: [CMCDEntry]
        var ignored: [CMCDIgnoredKey]
    }

    /// The fields, followed in the same allocation by the source text of a typed-only
    /// decode: one allocation per payload. Immutable once the payload is built.
    final class Box: ManagedBuffer<Fields, UInt8> {
        /// A box holding `fields` and no source text (so nothing in them may point into one).
        static func make(_ fields: Fields) -> Box {
            precondition(fields.sessionIDInSource == nil, "fields that refer to source text need that text")
            var fields = fields
            fields.sourceCount = -1
            return unsafeDowncast(Box.create(minimumCapacity: 0) { _ in fields }, to: Box.self)
        }

        /// A box with empty fields (to be filled in place) holding a copy of `source`, with
        /// room for at least `capacity` bytes.
        static func make(source: UnsafeBufferPointer<UInt8>, capacity: Int = 0) -> Box {
            let count = source.count
            let buffer = Box.create(minimumCapacity: max(count, capacity)) { _ in
                var fields = Fields()
                fields.sourceCount = count
                return fields
            }
            if let base = source.baseAddress, count > 0 {
                buffer.withUnsafeMutablePointerToElements { UnsafeMutableRawPointer($0).copyMemory(from: base, byteCount: count) }
            }
            return unsafeDowncast(buffer, to: Box.self)
        }

        /// A box holding a copy of `source`, with empty fields: the cached one when nothing
        /// else holds it and it is large enough, else a new one, which the cache then keeps.
        static func make(source: UnsafeBufferPointer<UInt8>, reusing cache: inout BoxCache) -> Box {
            let count = source.count
            if count <= cache.capacity, isKnownUniquelyReferenced(&cache.box), let box = cache.box {
                box.withUnsafeMutablePointers { fields, text in
                    // In place: assigning would first copy the old fields out to destroy them.
                    fields.deinitialize(count: 1)
                    fields.initialize(to: Fields())
                    fields.pointee.sourceCount = count
                    if let base = source.baseAddress, count > 0 { UnsafeMutableRawPointer(text).copyMemory(from: base, byteCount: count) }
                }
                return box
            }
            // Room for the usual query value and then some, so that a slightly longer one
            // still fits next time.
            let capacity = max(count, 1024)
            let box = make(source: source, capacity: capacity)
            cache.box = box
            cache.capacity = capacity
            return box
        }

        /// The kept source text, if any.
        var source: String? {
            let count = header.sourceCount
            guard count >= 0 else { return nil }
            let text = withUnsafeMutablePointerToElements { String(decoding: UnsafeBufferPointer(start: $0, count: count), as: UTF8.self) }
            return header.sourceIsQueryEncoded ? PercentDecoding.decode(text, plusAsSpace: true) : text
        }
    }

    /// The last box a decoder made, kept so that once nothing else holds it (the usual case
    /// when a record has been handled before the next is decoded) the next payload reuses
    /// its storage rather than freeing one allocation and making another.
    ///
    /// Unchecked `Sendable`: a box is only ever refilled while this holds the sole reference,
    /// so no payload can observe the change, whichever thread it was on.
    struct BoxCache: @unchecked Sendable {
        fileprivate var box: Box?
        /// Bytes of source text the cached box can hold.
        fileprivate var capacity = 0
    }

    /// Shares the immutable box across threads (`ManagedBuffer` itself is not `Sendable`).
    struct SharedBox: @unchecked Sendable { let box: Box }

    let shared: SharedBox
    var box: Box { shared.box }
    /// Reads the box's fields without the dynamic exclusivity check a class property costs
    /// (the box is immutable once built).
    @inline(__always)
    private func read<T>(_ field: (borrowing Fields) -> T) -> T { shared.box.withUnsafeMutablePointerToHeader { field($0.pointee) } }

    /// Every key in wire order (invalid ones marked).
    public var entries: [CMCDEntry] { read { $0.full?.entries } ?? fullDecode?.entries ?? [] }
    /// Members that were left out, and why: reserved keys whose values had the wrong type
    /// or an implausible value, and (decoded leniently) members that could not be read.
    public var ignored: [CMCDIgnoredKey] { read { $0.full?.ignored } ?? fullDecode?.ignored ?? [] }

    /// The members a decode left out (as `ignored`), known without rebuilding the full view:
    /// what the record path counts as member errors.
    public var droppedMembers: [CMCDIgnoredKey] { read { $0.droppedMembers } ?? [] }
    /// Whether `droppedMembers` is not empty (a check the record path makes per record).
    public var hasDroppedMembers: Bool { read { $0.droppedMembers != nil } }

    private var fullDecode: CMCDPayload? { box.source.flatMap { try? CMCDPayload(raw: $0) } }

    public static func == (lhs: CMCDPayload, rhs: CMCDPayload) -> Bool {
        lhs.version == rhs.version && lhs.entries == rhs.entries
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(entries) }

    /// `v`; 1 when absent.
    public var version: Int { read { $0.version } }
    public var sessionID: String? {
        if let id = read({ $0.sessionID }) { return id }
        var id: String?
        withSessionIDBytes { id = String(decoding: $0, as: UTF8.self) }
        return id
    }

    /// Whether the payload has a non-empty session id (without making a `String` of it).
    public var hasSessionID: Bool {
        read { fields in
            if let range = fields.sessionIDInSource { return range.upperBound > range.lowerBound }
            return !(fields.sessionID?.isEmpty ?? true)
        }
    }

    /// Calls `body` with the session id's UTF-8 bytes; returns false (without calling it)
    /// when there is no session id. Not generic, so that callers in other modules get
    /// straight code.
    @discardableResult
    public func withSessionIDBytes(_ body: (UnsafeBufferPointer<UInt8>) -> Void) -> Bool {
        shared.box.withUnsafeMutablePointers { fields, text -> Bool in
            if let range = fields.pointee.sessionIDInSource {
                body(UnsafeBufferPointer(start: text + Int(range.lowerBound), count: Int(range.upperBound &- range.lowerBound)))
                return true
            }
            guard var id = fields.pointee.sessionID else { return false }
            id.withUTF8(body)
            return true
        }
    }
    public var contentID: String? { read { $0.contentID } }
    public var objectType: CMCDObjectType? { read { $0.objectType } }
    public var streamingFormat: String? { CMCDKeys.streamingFormatTokens.text(number: read { $0.streamingFormat }) }
    public var streamType: String? { CMCDKeys.streamTypeTokens.text(number: read { $0.streamType }) }
    public var state: CMCDPlayerState? { read { $0.state } }
    public var event: String? { read { $0.event } }
    public var startup: Bool { read { $0.startup } }
    public var bufferStarvation: Bool { read { $0.bufferStarvation } }
    public var backgrounded: Bool { read { $0.backgrounded } }
    public var nonRendered: Bool { read { $0.nonRendered } }
    public var bufferLength: CMCDMeasure? { read { Fields.measure(0x626C, $0.bufferLength, $0.otherComponents) } }
    public var encodedBitrate: CMCDMeasure? { read { Fields.measure(0x6272, $0.encodedBitrate, $0.otherComponents) } }
    public var topBitrate: CMCDMeasure? { read { Fields.measure(0x7462, $0.topBitrate, $0.otherComponents) } }
    public var measuredThroughput: CMCDMeasure? { read { Fields.measure(0x6D7470, $0.measuredThroughput, $0.otherComponents) } }
    public var playheadBitrate: CMCDMeasure? { read { Fields.measure(0x7062, $0.playheadBitrate, $0.otherComponents) } }
    public var targetBufferLength: CMCDMeasure? { read { Fields.measure(0x74626C, $0.targetBufferLength, $0.otherComponents) } }
    public var starvationCount: CMCDMeasure? { read { Fields.measure(0x627361, $0.starvationCount, $0.otherComponents) } }
    public var starvationDuration: CMCDMeasure? { read { Fields.measure(0x627364, $0.starvationDuration, $0.otherComponents) } }
    public var starvationDurationTotal: CMCDMeasure? { read { Fields.measure(0x62736461, $0.starvationDurationTotal, $0.otherComponents) } }
    public var objectDuration: Int64? { read { $0.objectDuration } }
    public var deadline: Int64? { read { $0.deadline } }
    public var requestedMaxThroughput: Int64? { read { $0.requestedMaxThroughput } }
    public var mediaStartDelay: Int64? { read { $0.mediaStartDelay } }
    public var playheadTime: Int64? { read { $0.playheadTime } }
    public var sequenceNumber: Int64? { read { $0.sequenceNumber } }
    public var timestamp: Int64? { read { $0.timestamp } }
    public var liveLatency: Int64? { read { $0.liveLatency } }
    public var droppedFrames: Int64? { read { $0.droppedFrames } }
    public var playbackRate: Double? { read { $0.playbackRate } }
    /// Player error codes (`ec`).
    public var errorCodes: [String] { self["ec"].map(Self.strings) ?? [] }
    /// Next object requests (`nor`), as paths.
    public var nextObjectRequests: [String] { self["nor"].map(Self.strings) ?? [] }

    public init() { shared = SharedBox(box: Box.make(Fields())) }

    init(fields: Fields) { shared = SharedBox(box: Box.make(fields)) }

    /// Builds a payload from parsed dictionary members, validating each reserved key's type.
    public init(members: [SFDictionaryMember], ignored alreadyIgnored: [CMCDIgnoredKey] = []) throws(CMCDDecodingError) {
        shared = SharedBox(box: Box.make(try Fields(members: members, ignored: alreadyIgnored)))
    }
}

extension CMCDPayload.Fields {
    init(members: [SFDictionaryMember], ignored alreadyIgnored: [CMCDIgnoredKey]) throws(CMCDDecodingError) {
        var ignored = alreadyIgnored
        // `v` decides how some keys read, and keys may come in any order: find it first.
        if let v = members.last(where: { $0.key == "v" }) {
            if case .item(let item) = v.value, case .integer(let n) = item.value {
                if n > 2 { throw .unsupportedVersion(n) }
                if n >= 1 { version = Int(n) }
            }
        }
        var entries = members
        defer {
            full = CMCDPayload.FullView(entries: entries, ignored: ignored)
            droppedMembers = ignored.isEmpty ? nil : ignored
        }
        for i in entries.indices {
            let code = CMCDKeys.packedCode(entries[i].key)
            switch CMCDPayload.normalize(code: code, member: entries[i].value, version: version) {
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
}

extension CMCDPayload {

    /// Parses a CMCD dictionary (the payload as it is once transport encoding is removed).
    /// Leniently by default: a member that cannot be read is left out (listed in `ignored`)
    /// and the rest kept; `strict` fails the whole payload on any RFC 8941 error instead.
    public init(raw: String, limits: SFDictionaryParser.Limits = .init(), strict: Bool = false) throws(CMCDDecodingError) {
        var copy = raw
        let outcome = copy.withUTF8 { bytes in
            Result { () throws(CMCDDecodingError) in try CMCDPayload(rawBytes: bytes, limits: limits, strict: strict) }
        }
        self = try outcome.get()
    }

    /// Parses a CMCD dictionary from bytes (see `init(raw:limits:strict:)`).
    public init(rawBytes: UnsafeBufferPointer<UInt8>, limits: SFDictionaryParser.Limits = .init(), strict: Bool = false) throws(CMCDDecodingError) {
        let members: [SFDictionaryMember]
        var dropped: [CMCDIgnoredKey] = []
        if strict {
            do { members = try SFDictionaryParser.parse(bytes: rawBytes, limits: limits) } catch { throw .syntax(error) }
        } else {
            do { members = try SFDictionaryParser.parse(bytes: rawBytes, limits: limits, dropped: &dropped) } catch { throw .syntax(error) }
        }
        try self.init(members: members, ignored: dropped)
    }

    /// A value no typed view accepts: assigning it clears the view.
    static let clearing = SFMember.bare(.byteSequence(""))

    /// The valid value of a key.
    public subscript(key: String) -> SFMember? {
        entries.last(where: { $0.key == key && $0.isValid })?.value
    }

    public var isEmpty: Bool { entries.isEmpty }

    /// Up-converts v1 forms to v2 (single integers to one-element lists, `nor` strings to
    /// lists), as CML's `convertToLatest` does. `v` itself is left as sent.
    public func convertedToLatest() -> CMCDPayload {
        var copy = box.header
        // The new box keeps no source text: the id moves out of it.
        copy.sessionID = sessionID
        copy.sessionIDInSource = nil
        copy.full = FullView(entries: entries.map { entry in
            guard entry.isValid, let kind = CMCDKeys.kind(of: entry.key), case .item(let item) = entry.value else { return entry }
            switch kind {
            case .integerList, .objectRequests, .stringList:
                return CMCDEntry(key: entry.key, value: .innerList([item], parameters: []), isValid: true)
            default:
                return entry
            }
        }, ignored: ignored)
        return CMCDPayload(fields: copy)
    }

    // MARK: - Validation

    /// What validation decided for one key.
    enum Verdict {
        case keep
        case replace(SFMember)
        case invalid(String)
    }

    static func normalize(code: UInt64?, member: SFMember, version: Int) -> Verdict {
        guard let code, let kind = CMCDKeys.kind(code: code) else { return .keep }  // custom or unknown: kept as sent
        switch kind {
        case .integerList:
            switch member {
            case .item(let item):
                if case .integer(let n) = item.value { return CMCDKeys.isPlausible(code: code, n) ? .keep : implausible(n) }
            case .innerList(let items, _):
                var allIntegers = true
                for item in items {
                    guard case .integer(let n) = item.value else {
                        allIntegers = false
                        break
                    }
                    if !CMCDKeys.isPlausible(code: code, n) { return implausible(n) }
                }
                if allIntegers { return .keep }
            }
            return .invalid("expected an integer or an inner list of integers")
        case .integer:
            if case .item(let item) = member, case .integer(let n) = item.value {
                return CMCDKeys.isPlausible(code: code, n) ? .keep : implausible(n)
            }
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
                    if let limit = CMCDKeys.maxLength(code: code), s.utf8.count > limit {
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
                    if let allowed = CMCDKeys.tokens(code: code), !allowed.contains(text) {
                        return .invalid("'\(text.prefix(16))' is not one of this key's tokens")
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

    static func implausible(_ n: Int64) -> Verdict {
        .invalid(n < 0 ? "negative value \(n)" : "implausible value \(n)")
    }

    static func measure(_ member: SFMember) -> CMCDMeasure? {
        switch member {
        case .item(let item):
            if case .integer(let n) = item.value {
                return CMCDMeasure(single: .init(value: n, objectType: objectTypeParameter(item.parameters)))
            }
            return nil
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

    static func objectTypeParameter(_ parameters: [SFParameter]) -> CMCDObjectType? {
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

extension CMCDPayload.Fields {
    /// The measure of key `code` from its first component and the fields' `otherComponents`
    /// (static, so that callers reading the fields in place do not copy them).
    static func measure(
        _ code: UInt64, _ first: CMCDMeasure.Component?, _ others: [(code: UInt64, components: [CMCDMeasure.Component])]?
    ) -> CMCDMeasure? {
        guard let first else { return nil }
        guard let others else { return CMCDMeasure(single: first) }
        return CMCDMeasure(first: first, rest: others.last(where: { $0.code == code })?.components)
    }

    /// Stores a measure of key `code`: its first component is returned for its field, the
    /// others (replacing any an earlier value of the key left) go to `otherComponents`.
    @inline(never)
    mutating func keep(_ code: UInt64, _ measure: CMCDMeasure?) -> CMCDMeasure.Component? {
        if otherComponents != nil {
            otherComponents!.removeAll { $0.code == code }
            if otherComponents!.isEmpty { otherComponents = nil }
        }
        if let others = measure?.otherComponents { otherComponents = (otherComponents ?? []) + [(code, others)] }
        return measure?.firstComponent
    }

    /// Sets the typed view of one key from its (validated) value.
    mutating func assignTyped(code: UInt64, value: SFMember) {
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
        case 0x736964 /* sid */:
            sessionID = text
            sessionIDInSource = nil
        case 0x636964 /* cid */: contentID = text
        case 0x6F74 /* ot */: objectType = text.flatMap(CMCDObjectType.init(rawValue:))
        case 0x7366 /* sf */: streamingFormat = CMCDKeys.streamingFormatTokens.number(text)
        case 0x7374 /* st */: streamType = CMCDKeys.streamTypeTokens.number(text)
        case 0x737461 /* sta */: state = text.flatMap(CMCDPlayerState.init(rawValue:))
        case 0x65 /* e */: event = text
        case 0x7375 /* su */: startup = flag
        case 0x6273 /* bs */: bufferStarvation = flag
        case 0x6267 /* bg */: backgrounded = flag
        case 0x6E72 /* nr */: nonRendered = flag
        case 0x626C /* bl */: bufferLength = keep(code, CMCDPayload.measure(value))
        case 0x6272 /* br */: encodedBitrate = keep(code, CMCDPayload.measure(value))
        case 0x7462 /* tb */: topBitrate = keep(code, CMCDPayload.measure(value))
        case 0x6D7470 /* mtp */: measuredThroughput = keep(code, CMCDPayload.measure(value))
        case 0x7062 /* pb */: playheadBitrate = keep(code, CMCDPayload.measure(value))
        case 0x74626C /* tbl */: targetBufferLength = keep(code, CMCDPayload.measure(value))
        case 0x627361 /* bsa */: starvationCount = keep(code, CMCDPayload.measure(value))
        case 0x627364 /* bsd */: starvationDuration = keep(code, CMCDPayload.measure(value))
        case 0x62736461 /* bsda */: starvationDurationTotal = keep(code, CMCDPayload.measure(value))
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
            default: playbackRate = nil
            }
        default: break
        }
    }
}

/// The values the detectors read on every request, copied out of a payload in one call
/// (rather than one call per value from another module).
public struct CMCDSignals: Sendable, Equatable {
    public var objectType: CMCDObjectType?
    /// `bl` for the request's object type (`CMCDMeasure.value(for:)`).
    public var bufferLength: Int64?
    /// Whether the request is for media that reports the playback buffer: audio, video,
    /// muxed, or no object type given.
    public var isMediaRequest: Bool
    public var startup: Bool
    public var bufferStarvation: Bool
    /// The largest `bsa` component.
    public var starvationCount: Int64?
    /// The largest `bsd` component.
    public var starvationDuration: Int64?
    public var state: CMCDPlayerState?
    public var mediaStartDelay: Int64?
    /// Live or low-latency live (`st=l`, v2 `st=ll`), where players keep small buffers.
    public var isLive: Bool = false
    /// `pr`, when sent (players omit it at 1.0).
    public var playbackRate: Double?
    /// The largest `br` and `mtp` components (kbps).
    public var encodedBitrate: Int64? = nil
    public var measuredThroughput: Int64? = nil
}

extension CMCDPayload {
    public var signals: CMCDSignals {
        // Field by field through the pointer: passing the fields to a closure would copy them.
        shared.box.withUnsafeMutablePointerToHeader { f in
            let objectType = f.pointee.objectType
            let others = f.pointee.otherComponents
            return CMCDSignals(
                objectType: objectType,
                bufferLength: others == nil ? f.pointee.bufferLength?.value : Fields.measure(0x626C, f.pointee.bufferLength, others)?.value(for: objectType),
                isMediaRequest: objectType?.isMedia ?? true, startup: f.pointee.startup, bufferStarvation: f.pointee.bufferStarvation,
                starvationCount: others == nil ? f.pointee.starvationCount?.value : Fields.measure(0x627361, f.pointee.starvationCount, others)?.maximum,
                starvationDuration: others == nil ? f.pointee.starvationDuration?.value : Fields.measure(0x627364, f.pointee.starvationDuration, others)?.maximum,
                state: f.pointee.state, mediaStartDelay: f.pointee.mediaStartDelay,
                isLive: f.pointee.streamType >= 2 /* l, ll (CMCDKeys.streamTypeTokens) */, playbackRate: f.pointee.playbackRate,
                encodedBitrate: others == nil ? f.pointee.encodedBitrate?.value : Fields.measure(0x6272, f.pointee.encodedBitrate, others)?.maximum,
                measuredThroughput: others == nil
                    ? f.pointee.measuredThroughput?.value : Fields.measure(0x6D7470, f.pointee.measuredThroughput, others)?.maximum)
        }
    }
}
