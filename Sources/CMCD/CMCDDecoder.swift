import SentinelJSON

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How a CMCD payload was transmitted.
public enum CMCDForm: String, Sendable, CaseIterable {
    /// The `CMCD=` query argument (a full URL, a query string, or the bare encoded value).
    case query
    /// The `CMCD-Request`, `CMCD-Object`, `CMCD-Status` and `CMCD-Session` headers.
    case header
    /// The dictionary itself, not URL-encoded.
    case raw
    /// A v1 JSON object (or an array of them).
    case json
    /// A v2 event-mode POST body: one record per line.
    case body
}

/// Decodes CMCD from each transmission form into `CMCDPayload`s.
public enum CMCDDecoder {
    /// How many times a query value is URL-decoded at most: CloudFront re-encodes `%`, so
    /// double and triple encoding occur in real logs.
    public static let maxQueryDecodings = 3

    // MARK: Query

    /// Decodes the `CMCD=` argument. Accepts a full URL, a query string or, when
    /// `allowBareValue` is set and there is no `CMCD=` argument, the bare encoded value.
    /// `strict` fails on any RFC 8941 error; otherwise a member that cannot be read is left
    /// out alone (see `CMCDPayload.init(raw:limits:strict:)`).
    public static func decodeQuery(_ text: String, allowBareValue: Bool = true, strict: Bool = false) throws(CMCDDecodingError) -> CMCDPayload {
        var copy = text
        var buffers = DecodingBuffers(internedStrings: 0)
        let outcome = copy.withUTF8 { bytes in
            Result { () throws(CMCDDecodingError) in
                try decodeQuery(bytes: bytes, allowBareValue: allowBareValue, strict: strict, buffers: &buffers)
            }
        }
        guard let result = try outcome.get() else { throw .noCMCD("no CMCD query argument") }
        return result
    }

    /// Reusable buffers for decoding a stream of payloads: a steady stream allocates nothing
    /// for them, repeated content ids share one string, and a payload nothing holds any more
    /// lends its storage to the next.
    public struct DecodingBuffers: Sendable {
        var first: [UInt8] = []
        var second: [UInt8] = []
        public var strings: InternedStrings
        var boxes = CMCDPayload.BoxCache()

        /// `internedStrings`: how many distinct content ids to share (0: none).
        public init(internedStrings: Int = 1024) {
            strings = InternedStrings(capacity: internedStrings)
            first.reserveCapacity(4096)
            second.reserveCapacity(4096)
        }
    }

    /// Byte-level query decoding for the record parser; `nil` when there is no `CMCD=` argument.
    /// With `typedOnly` the payload is decoded for its typed views only (see `CMCDPayload(typedFrom:)`).
    public static func decodeQuery(
        bytes: UnsafeBufferPointer<UInt8>, allowBareValue: Bool, typedOnly: Bool = false, strict: Bool = false, buffers: inout DecodingBuffers
    ) throws(CMCDDecodingError) -> CMCDPayload? {
        // The usual CloudFront query is the CMCD argument alone. When the in-place reader takes
        // everything after `CMCD=`, there is no `?`, `#` or `&` in it (it declines those), so
        // that is the argument's whole value, as `queryValueRange` would find: no search.
        if typedOnly, bytes.count > 5, startsCMCDArgument(bytes, at: 0),
            let payload = CMCDPayload(
                typedFromQueryValue: UnsafeBufferPointer(rebasing: bytes[5...]), strings: &buffers.strings, boxes: &buffers.boxes)
        {
            return payload
        }
        guard let range = queryValueRange(bytes, allowBareValue: allowBareValue) else { return nil }
        return try decodeQueryValue(UnsafeBufferPointer(rebasing: bytes[range]), typedOnly: typedOnly, strict: strict, buffers: &buffers)
    }

    /// Decodes the value of the `CMCD` argument: URL-decoded (as often as it was encoded,
    /// up to `maxQueryDecodings`), then decoded as a dictionary.
    static func decodeQueryValue(
        _ value: UnsafeBufferPointer<UInt8>, typedOnly: Bool, strict: Bool = false, buffers: inout DecodingBuffers
    ) throws(CMCDDecodingError) -> CMCDPayload {
        if typedOnly, let payload = CMCDPayload(typedFromQueryValue: value, strings: &buffers.strings, boxes: &buffers.boxes) {
            return payload
        }
        var (length, _) = PercentDecoding.decode(value, plusAsSpace: true, intoPrefixOf: &buffers.first)
        var decodings = 1
        while decodings < maxQueryDecodings {
            let again = buffers.first.withUnsafeBufferPointer { PercentDecoding.looksEncoded(UnsafeBufferPointer(rebasing: $0[0..<length])) }
            if !again { break }
            length = buffers.first.withUnsafeBufferPointer {
                PercentDecoding.decode(UnsafeBufferPointer(rebasing: $0[0..<length]), plusAsSpace: false, intoPrefixOf: &buffers.second).length
            }
            swap(&buffers.first, &buffers.second)
            decodings += 1
        }
        return try buffers.first.withUnsafeBufferPointer { whole in
            let decoded = UnsafeBufferPointer(rebasing: whole[0..<length])
            return Result { () throws(CMCDDecodingError) in
                typedOnly
                    ? try CMCDPayload(typedFrom: decoded, strings: &buffers.strings, boxes: &buffers.boxes)
                    : try CMCDPayload(rawBytes: decoded, strict: strict)
            }
        }.get()
    }

    /// Whether `CMCD=` starts at `start` (at least five bytes must remain).
    @inline(__always)
    static func startsCMCDArgument(_ bytes: UnsafeBufferPointer<UInt8>, at start: Int) -> Bool {
        bytes[start] == UInt8(ascii: "C") && bytes[start + 1] == UInt8(ascii: "M") && bytes[start + 2] == UInt8(ascii: "C")
            && bytes[start + 3] == UInt8(ascii: "D") && bytes[start + 4] == UInt8(ascii: "=")
    }

    /// Finds the value of the `CMCD` argument in a URL or query string.
    static func queryValueRange(_ bytes: UnsafeBufferPointer<UInt8>, allowBareValue: Bool) -> Range<Int>? {
        guard !bytes.isEmpty else { return nil }
        func find(_ byte: UInt8, from: Int, to: Int) -> Int? { ByteSearch.first(byte, in: bytes, from: from, to: to) }
        var start = 0
        var end = bytes.count
        // A `?` begins the URL's query only when it ends a URL or path; in a query string a
        // `?` is an ordinary character (RFC 3986 allows it in a query), part of some value.
        if let q = find(UInt8(ascii: "?"), from: 0, to: end), endsURLOrPath(bytes, at: q) { start = q + 1 }
        if let hash = find(UInt8(ascii: "#"), from: start, to: end) { end = hash }
        var pieceStart = start
        var pieces = 0
        while pieceStart <= end {
            let pieceEnd = find(UInt8(ascii: "&"), from: pieceStart, to: end) ?? end
            pieces += 1
            let n = pieceEnd - pieceStart
            if n >= 5, startsCMCDArgument(bytes, at: pieceStart) {
                return (pieceStart + 5)..<pieceEnd
            }
            pieceStart = pieceEnd + 1
        }
        if allowBareValue, pieces == 1, start < end { return start..<end }
        return nil
    }

    /// Whether the `?` at `q` ends a URL or path rather than standing in a query string:
    /// nothing before it belongs to a query (no `=` or `&`), or what precedes it starts like
    /// a URL (`scheme://`) or a path (`/`), where `=` may occur.
    static func endsURLOrPath(_ bytes: UnsafeBufferPointer<UInt8>, at q: Int) -> Bool {
        let before = UnsafeBufferPointer(rebasing: bytes[0..<q])
        if !before.contains(UInt8(ascii: "=")), !before.contains(UInt8(ascii: "&")) { return true }
        if before.first == UInt8(ascii: "/") { return true }
        guard let colon = before.firstIndex(of: UInt8(ascii: ":")), colon > 0, colon + 2 < q else { return false }
        let scheme = before[0..<colon]
        return bytes[colon + 1] == UInt8(ascii: "/") && bytes[colon + 2] == UInt8(ascii: "/")
            && scheme.allSatisfy { ($0 | 0x20) &- UInt8(ascii: "a") < 26 || $0 &- UInt8(ascii: "0") < 10 || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }
    }

    // MARK: Headers

    /// Whether a header name is one of the four CMCD headers (case-insensitive).
    public static func isCMCDHeader(_ name: some StringProtocol) -> Bool {
        CMCDKeys.headerNames.contains { $0.utf8.count == name.utf8.count && $0.lowercased() == name.lowercased() }
    }

    /// Merges the four CMCD headers (names case-insensitive; other headers ignored).
    /// Returns `nil` when none of them is present.
    /// `strict` as for `decodeQuery`.
    public static func decodeHeaders(_ headers: [(name: String, value: String)], strict: Bool = false) throws(CMCDDecodingError) -> CMCDPayload? {
        var members: [SFDictionaryMember] = []
        var dropped: [CMCDIgnoredKey] = []
        var found = false
        for header in headers where isCMCDHeader(header.name.trimmingSpaces) {
            found = true
            var parsed: [SFDictionaryMember] = []
            if strict {
                do { parsed = try SFDictionaryParser.parse(header.value) } catch { throw .syntax(error) }
            } else {
                var value = header.value
                let outcome = value.withUTF8 { bytes in
                    Result { () throws(SFParseError) in try SFDictionaryParser.parse(bytes: bytes, dropped: &dropped) }
                }
                do { parsed = try outcome.get() } catch { throw .syntax(error) }
            }
            for member in parsed {
                if let i = members.firstIndex(where: { $0.key == member.key }) {
                    members[i].value = member.value
                } else {
                    members.append(member)
                }
            }
        }
        guard found else { return nil }
        return try CMCDPayload(members: members, ignored: dropped)
    }

    /// Decodes HTTP header lines (`Name: value`, one per line).
    public static func decodeHeaderLines(_ text: String, strict: Bool = false) throws(CMCDDecodingError) -> CMCDPayload {
        var headers: [(name: String, value: String)] = []
        for line in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            guard let colon = line.firstIndex(of: ":") else {
                throw .invalidInput("header line without ':': \(line.prefix(60))")
            }
            headers.append((String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingSpaces))
        }
        guard let payload = try decodeHeaders(headers, strict: strict) else { throw .noCMCD("no CMCD-Request, CMCD-Object, CMCD-Status or CMCD-Session header") }
        return payload
    }

    /// Decodes CloudFront's `cs-headers` field: URL-encoded header lines joined by `%0A`.
    /// Returns `nil` quickly when no CMCD header is present.
    public static func decodeCloudFrontHeaders(bytes: UnsafeBufferPointer<UInt8>, buffers: inout DecodingBuffers) throws(CMCDDecodingError) -> CMCDPayload? {
        guard containsCMCDPrefix(bytes) else { return nil }
        let length = PercentDecoding.decode(bytes, plusAsSpace: false, intoPrefixOf: &buffers.first).length
        let text = String(decoding: buffers.first[0..<length], as: UTF8.self)
        var headers: [(name: String, value: String)] = []
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon]
            guard isCMCDHeader(name.trimmingSpaces) else { continue }
            headers.append((String(name), String(line[line.index(after: colon)...]).trimmingSpaces))
        }
        return try decodeHeaders(headers)
    }

    /// Case-insensitive search for `cmcd-`: the cheap test before decoding a header blob.
    static func containsCMCDPrefix(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let base = bytes.baseAddress, bytes.count >= 5 else { return false }
        // Find each '-' with memchr and look at the four bytes before it.
        var offset = 4
        while offset < bytes.count {
            guard let hit = memchr(base + offset, Int32(UInt8(ascii: "-")), bytes.count - offset) else { return false }
            let i = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
            if bytes[i - 4] | 0x20 == UInt8(ascii: "c"), bytes[i - 3] | 0x20 == UInt8(ascii: "m"),
                bytes[i - 2] | 0x20 == UInt8(ascii: "c"), bytes[i - 1] | 0x20 == UInt8(ascii: "d")
            {
                return true
            }
            offset = i + 1
        }
        return false
    }

    // MARK: Body

    /// Decodes an event-mode POST body: one record per line, surrounding spaces ignored,
    /// blank lines skipped. A bad line fails the whole call with its line number.
    public static func decodeBody(_ text: String, strict: Bool = false) throws(CMCDDecodingError) -> [CMCDPayload] {
        var payloads: [CMCDPayload] = []
        var lineNumber = 0
        for line in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            var record = String(line)
            if record.hasSuffix("\r") { record.removeLast() }
            record = record.trimmingSpaces
            if record.isEmpty { continue }
            do {
                payloads.append(try CMCDPayload(raw: record, strict: strict))
            } catch {
                throw .invalidInput("line \(lineNumber): \(error)")
            }
        }
        return payloads
    }

    // MARK: JSON

    /// Decodes a v1 JSON object (`{"bs":true,"rtp":15000,"sid":"..."}`).
    public static func decodeJSON(_ value: JSONValue) throws(CMCDDecodingError) -> CMCDPayload {
        guard case .object(let members) = value else { throw .invalidInput("expected a JSON object") }
        var sf: [SFDictionaryMember] = []
        var ignored: [CMCDIgnoredKey] = []
        for (key, json) in members {
            let tokenKey = CMCDKeys.kind(of: key) == .token
            if let member = sfMember(fromJSON: json, asToken: tokenKey) {
                sf.append(SFDictionaryMember(key: key, value: member))
            } else {
                ignored.append(CMCDIgnoredKey(key: key, reason: "unsupported JSON value"))
            }
        }
        return try CMCDPayload(members: sf, ignored: ignored)
    }

    /// Decodes JSON text: one object, or an array of objects.
    public static func decodeJSON(text: String) throws(CMCDDecodingError) -> [CMCDPayload] {
        let value: JSONValue
        do { value = try JSONParser.parse(text) } catch { throw .invalidInput(error.description) }
        if case .array(let items) = value {
            var payloads: [CMCDPayload] = []
            for item in items { payloads.append(try decodeJSON(item)) }
            return payloads
        }
        return [try decodeJSON(value)]
    }

    static func sfBareItem(fromJSON json: JSONValue, asToken: Bool) -> SFBareItem? {
        switch json {
        case .bool(let b): return .boolean(b)
        case .int(let i): return .integer(i)
        case .double(let d): return d.isFinite ? .decimal(d) : nil
        case .string(let s): return asToken ? .token(s) : .string(s)
        default: return nil
        }
    }

    static func sfItem(fromJSON json: JSONValue, asToken: Bool) -> SFItem? {
        if case .object = json, let value = json["value"], let params = json["params"]?.objectMembers {
            guard let bare = sfBareItem(fromJSON: value, asToken: asToken) else { return nil }
            var parameters: [SFParameter] = []
            for (key, p) in params {
                guard let v = sfBareItem(fromJSON: p, asToken: true) else { return nil }
                parameters.append(SFParameter(key: key, value: v))
            }
            return SFItem(bare, parameters: parameters)
        }
        return sfBareItem(fromJSON: json, asToken: asToken).map { SFItem($0) }
    }

    static func sfMember(fromJSON json: JSONValue, asToken: Bool) -> SFMember? {
        if case .array(let items) = json {
            guard items.count <= SFDictionaryParser.Limits().maxListItems else { return nil }
            var list: [SFItem] = []
            for item in items {
                guard let sf = sfItem(fromJSON: item, asToken: asToken) else { return nil }
                list.append(sf)
            }
            return .innerList(list, parameters: [])
        }
        return sfItem(fromJSON: json, asToken: asToken).map { .item($0) }
    }
}

extension StringProtocol {
    /// The text without leading and trailing spaces and tabs.
    var trimmingSpaces: String {
        let scalars = unicodeScalars
        var start = scalars.startIndex
        var end = scalars.endIndex
        while start < end, scalars[start] == " " || scalars[start] == "\t" { start = scalars.index(after: start) }
        while end > start, scalars[scalars.index(before: end)] == " " || scalars[scalars.index(before: end)] == "\t" {
            end = scalars.index(before: end)
        }
        return String(String.UnicodeScalarView(scalars[start..<end]))
    }
}
