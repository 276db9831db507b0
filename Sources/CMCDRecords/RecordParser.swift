import CMCD
import SentinelJSON

/// The shape of the lines on the topic or in a file.
public enum RecordFormat: String, Sendable, CaseIterable {
    /// CloudFront real-time log lines (TAB separated, `-` for empty).
    case cloudfront
    /// One JSON object per line: CMCD keys at the top level or under `cmcd`, plus a timestamp.
    case json
    /// CMCD v2 event-mode lines (`e=t,sid="…",ts=…,v=2`); the time is `ts`.
    case cmcd
}

/// Why a line produced no sample.
public enum SkipReason: String, Sendable, CaseIterable, Comparable {
    case lineTooLong = "line_too_long"
    case fieldCount = "field_count"
    case badTimestamp = "bad_timestamp"
    case malformedJSON = "malformed_json"
    case noCMCD = "no_cmcd"
    case malformedCMCD = "malformed_cmcd"
    case unsupportedVersion = "unsupported_version"
    case noSessionID = "no_session_id"

    public static func < (lhs: SkipReason, rhs: SkipReason) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// The outcome of one line.
public enum RecordOutcome: Sendable {
    case sample(Sample)
    case skipped(SkipReason, detail: String)
}

/// Counters of what the parser has seen.
public struct ParseStatistics: Sendable, Equatable {
    public var lines = 0
    public var samples = 0
    public var skipped: [SkipReason: Int] = [:]
    public var skippedTotal: Int { skipped.values.reduce(0, +) }
    /// Members left out of records that were otherwise kept (a decimal or string no player
    /// should send, a wrong type, a negative buffer), by key label
    /// (`CMCDKeys.metricLabel(forDroppedKey:)`: a reserved key, `custom` or `unknown`).
    public var memberErrors: [String: Int] = [:]
    public var memberErrorsTotal: Int { memberErrors.values.reduce(0, +) }
    public init() {}
}

/// Turns record lines into samples. A value type with reusable scratch buffers, no IO.
///
/// Every input is bounded: lines over `maxLineBytes` are skipped unread, CMCD dictionaries
/// are limited in keys, list sizes and string lengths, and JSON in depth and elements.
public struct RecordParser: Sendable {
    public struct Configuration: Sendable {
        public var format: RecordFormat
        public var fields: CloudFrontFields
        public var maxLineBytes: Int
        public init(format: RecordFormat = .cloudfront, fields: CloudFrontFields = .default, maxLineBytes: Int = 64 * 1024) {
            self.format = format
            self.fields = fields
            self.maxLineBytes = maxLineBytes
        }
    }

    public let configuration: Configuration
    public private(set) var statistics = ParseStatistics()
    private var buffers = CMCDDecoder.DecodingBuffers()
    /// Edge locations are few and repeat on every line: one shared string each.
    private var edgeLocations = InternedStrings(capacity: 256)
    /// Where each field of the current CloudFront line starts (one slot per field, one for
    /// the end, one to detect a surplus field); sized once.
    private var fieldStarts: [Int]
    /// The field indices the CloudFront path reads for every line (-1: not selected), copied
    /// out of the configuration once.
    private let layout: (fieldCount: Int, timestamp: Int, milliseconds: Bool, edge: Int, status: Int, timeTaken: Int, query: Int, headers: Int)

    public init(configuration: Configuration = .init()) {
        self.configuration = configuration
        let fields = configuration.fields
        fieldStarts = [Int](repeating: 0, count: fields.names.count + 2)
        layout = (
            fields.names.count, fields.timestamp, fields.timestampIsMilliseconds, fields.edgeLocation ?? -1, fields.status ?? -1,
            fields.timeTaken ?? -1, fields.query ?? -1, fields.headers ?? -1
        )
    }

    /// Parses one message: one or more lines separated by LF (a trailing LF and CRLF endings
    /// are tolerated; blank lines are ignored).
    public mutating func parse(message: UnsafeBufferPointer<UInt8>, _ emit: (consuming RecordOutcome) -> Void) {
        parseLines(of: message) { outcome, _ in emit(outcome) }
    }

    /// Like `parse(message:_:)`, also handing over the line each outcome came from (to send
    /// a bad line to a dead-letter topic, say).
    public mutating func parseLines(of message: UnsafeBufferPointer<UInt8>, _ emit: (consuming RecordOutcome, UnsafeBufferPointer<UInt8>) -> Void) {
        var start = 0
        let n = message.count
        while start < n {
            let end = ByteSearch.first(0x0A, in: message, from: start, to: n) ?? n
            var lineEnd = end
            if lineEnd > start, message[lineEnd - 1] == 0x0D { lineEnd -= 1 }
            if lineEnd > start {
                let line = UnsafeBufferPointer(rebasing: message[start..<lineEnd])
                parse(line: line) { emit($0, line) }
            }
            start = end + 1
        }
    }

    public mutating func parse(message: String, _ emit: (consuming RecordOutcome) -> Void) {
        var copy = message
        copy.withUTF8 { parse(message: $0, emit) }
    }

    /// Parses one line (without its newline). Most formats give at most one outcome per
    /// line; a JSON array gives one per element.
    public mutating func parse(line: UnsafeBufferPointer<UInt8>, _ emit: (consuming RecordOutcome) -> Void) {
        statistics.lines += 1
        if line.count > configuration.maxLineBytes {
            record(Self.tooLong(line.count, limit: configuration.maxLineBytes), emit)
            return
        }
        switch configuration.format {
        case .cloudfront: record(parseCloudFront(line), emit)
        case .cmcd: record(parseEventLine(line), emit)
        case .json: parseJSON(line, emit)
        }
    }

    @inline(never)
    private mutating func parseJSON(_ line: UnsafeBufferPointer<UInt8>, _ emit: (consuming RecordOutcome) -> Void) {
        var outcomes: [RecordOutcome] = []
        Self.parseJSONLine(line) { outcomes.append($0) }
        for outcome in outcomes {
            if case .sample(let sample) = outcome, sample.cmcd.hasDroppedMembers { countDroppedMembers(sample.cmcd) }
            record(outcome, emit)
        }
    }

    // The skips whose reasons are formatted, out of line: the code that formats them would
    // otherwise sit among the instructions every record runs.

    @inline(never)
    private static func tooLong(_ count: Int, limit: Int) -> RecordOutcome {
        .skipped(.lineTooLong, detail: "line of \(count) bytes exceeds \(limit)")
    }

    @inline(never)
    private static func fieldCountMismatch(expected: Int, found: Int) -> RecordOutcome {
        .skipped(.fieldCount, detail: "expected \(expected) TAB-separated fields, found \(found)\(found > expected ? "+" : "")")
    }

    /// Records a skipped line that never reached the parser (for example one the reader cut
    /// because it was longer than the line limit).
    public mutating func countSkipped(_ reason: SkipReason) {
        statistics.lines += 1
        statistics.skipped[reason, default: 0] += 1
    }

    private mutating func record(_ outcome: consuming RecordOutcome, _ emit: (consuming RecordOutcome) -> Void) {
        switch outcome {
        case .sample: statistics.samples += 1
        case .skipped(let reason, _): statistics.skipped[reason, default: 0] += 1
        }
        emit(outcome)
    }

    @inline(never)
    private mutating func countDroppedMembers(_ payload: CMCDPayload) {
        for member in payload.droppedMembers {
            statistics.memberErrors[CMCDKeys.metricLabel(forDroppedKey: member.key), default: 0] += 1
        }
    }

    // MARK: CloudFront

    private mutating func parseCloudFront(_ line: UnsafeBufferPointer<UInt8>) -> RecordOutcome {
        let layout = self.layout
        let expected = layout.fieldCount
        // Field k spans starts[k] ..< starts[k + 1] - 1 (the TAB excluded).
        let found = fieldStarts.withUnsafeMutableBufferPointer { starts -> Int in
            starts[0] = 0
            var count = 1
            guard let base = line.baseAddress else { return count }
            // The TABs, 64 bytes at a time, until one more than the layout has fields for.
            let n = line.count
            @inline(__always) func take(_ tabs: UInt64, at offset: Int) -> Bool {
                var tabs = tabs
                while tabs != 0 {
                    guard count <= expected else { return false }
                    starts[count] = offset &+ tabs.trailingZeroBitCount &+ 1
                    count &+= 1
                    tabs &= tabs &- 1
                }
                return true
            }
            if n < 64 {
                // Too short for a block: its TABs' mask a byte at a time.
                var tabs: UInt64 = 0
                for offset in 0..<n where base[offset] == 0x09 { tabs |= 1 << UInt64(offset) }
                _ = take(tabs, at: 0)
            } else {
                var offset = 0
                var more = true
                while more, offset &+ 64 <= n {
                    more = take(ByteBlocks.equal64(base + offset, 0x09), at: offset)
                    offset &+= 64
                }
                // The last bytes as the last 64, without those already looked at.
                if more, offset < n {
                    let seen = UInt64(offset &- (n &- 64))
                    _ = take((ByteBlocks.equal64(base + (n &- 64), 0x09) >> seen) << seen, at: n &- 64)
                }
            }
            if count == expected { starts[count] = line.count + 1 }
            return count
        }
        guard found == expected else {
            return Self.fieldCountMismatch(expected: expected, found: found)
        }
        let starts = fieldStarts
        @inline(__always) func field(_ k: Int) -> UnsafeBufferPointer<UInt8>? {
            guard k >= 0 else { return nil }
            // Every field index is below the field count, and `starts` has two more slots.
            let (s, next) = starts.withUnsafeBufferPointer { ($0[k], $0[k &+ 1]) }
            let e = next &- 1
            if e <= s || (e &- s == 1 && line[s] == UInt8(ascii: "-")) { return nil }
            return UnsafeBufferPointer(rebasing: line[s..<e])
        }

        guard let timeField = field(layout.timestamp),
            let time = layout.milliseconds ? Self.parseEpochNumber(timeField, scale: 1) : Self.parseEpochNumber(timeField, scale: 1000)
        else {
            return .skipped(.badTimestamp, detail: "timestamp is missing or not epoch seconds")
        }

        var payload: CMCDPayload?
        do throws(CMCDDecodingError) {
            // CMCD headers take precedence over the query argument (CTA-5004).
            if let blob = field(layout.headers) {
                payload = try CMCDDecoder.decodeCloudFrontHeaders(bytes: blob, buffers: &buffers)
            }
            if payload == nil, let query = field(layout.query) {
                payload = try CMCDDecoder.decodeQuery(bytes: query, allowBareValue: false, typedOnly: true, buffers: &buffers)
            }
            if payload == nil, !configuration.fields.native.isEmpty {
                payload = try nativePayload(configuration.fields.native.compactMap { index, key in field(index).map { (key, $0) } })
            }
        } catch {
            return Self.skip(for: error)
        }
        guard let payload else { return .skipped(.noCMCD, detail: "no CMCD in the record") }
        if payload.hasDroppedMembers { countDroppedMembers(payload) }
        guard payload.hasSessionID else { return .skipped(.noSessionID, detail: "CMCD without a session id") }
        var edgeLocation: String?
        if let edge = field(layout.edge) { edgeLocation = Self.boundedText(edge, max: 64, sharing: &edgeLocations) }
        let sample = Sample(
            time: time, contentID: payload.contentID, edgeLocation: edgeLocation,
            httpStatus: field(layout.status).flatMap(Self.parseSmallInt),
            timeTaken: field(layout.timeTaken).flatMap(Self.parseSeconds), cmcd: consume payload)
        return .sample(consume sample)
    }

    /// CloudFront's `cmcd-*` fields carry single values: strings without quotes, booleans
    /// as `true`/`1`, numbers as text.
    private func nativePayload(_ values: [(key: String, bytes: UnsafeBufferPointer<UInt8>)]) throws(CMCDDecodingError) -> CMCDPayload? {
        guard !values.isEmpty else { return nil }
        var members: [SFDictionaryMember] = []
        var ignored: [CMCDIgnoredKey] = []
        for (key, bytes) in values {
            var text = PercentDecoding.decode(Self.boundedText(bytes, max: 1024), plusAsSpace: false)
            if text.count >= 2, text.hasPrefix("\""), text.hasSuffix("\"") { text = String(text.dropFirst().dropLast()) }
            let item: SFBareItem?
            switch CMCDKeys.kind(of: key) {
            case .boolean?: item = ["true", "1", "?1"].contains(text) ? .boolean(true) : (["false", "0", "?0"].contains(text) ? .boolean(false) : nil)
            case .integer?, .integerList?: item = Int64(text).map { .integer($0) }
            case .decimal?: item = Int64(text).map { .integer($0) } ?? Double(text).map { .decimal($0) }
            case .token?: item = .token(text)
            default: item = text.utf8.allSatisfy({ $0 >= 0x20 && $0 <= 0x7E }) ? .string(text) : nil
            }
            if let item { members.append(SFDictionaryMember(key: key, value: .bare(item))) } else { ignored.append(.init(key: key, reason: "unreadable CloudFront value")) }
        }
        return try CMCDPayload(members: members, ignored: ignored)
    }

    // MARK: CMCD event lines

    private mutating func parseEventLine(_ line: UnsafeBufferPointer<UInt8>) -> RecordOutcome {
        var start = 0
        var end = line.count
        while start < end, line[start] == 0x20 || line[start] == 0x09 { start += 1 }
        while end > start, line[end - 1] == 0x20 || line[end - 1] == 0x09 { end -= 1 }
        let trimmed = UnsafeBufferPointer(rebasing: line[start..<end])
        let payload: CMCDPayload
        do throws(CMCDDecodingError) {
            let isQuery = (trimmed.count >= 5 && trimmed[0] == UInt8(ascii: "C") && trimmed[1] == UInt8(ascii: "M"))
                || trimmed.contains(UInt8(ascii: "?")) || PercentDecoding.looksEncoded(trimmed)
            if isQuery {
                guard let p = try CMCDDecoder.decodeQuery(bytes: trimmed, allowBareValue: true, typedOnly: true, buffers: &buffers) else {
                    return .skipped(.noCMCD, detail: "no CMCD in the line")
                }
                payload = p
            } else {
                payload = try CMCDPayload(typedFrom: trimmed, strings: &buffers.strings)
            }
        } catch {
            return Self.skip(for: error)
        }
        if payload.hasDroppedMembers { countDroppedMembers(payload) }
        guard let ts = payload.timestamp, let time = Self.normaliseEpoch(ts) else {
            return .skipped(.badTimestamp, detail: "event line without a valid ts")
        }
        guard payload.hasSessionID else { return .skipped(.noSessionID, detail: "CMCD without a session id") }
        return .sample(Sample(time: time, contentID: payload.contentID, cmcd: payload))
    }

    // MARK: JSON

    static let jsonMetadataKeys: Set<String> = [
        "timestamp", "time", "@timestamp", "edge_location", "x-edge-location", "x_edge_location", "status",
        "sc-status", "time-taken", "time_taken", "cmcd", "c-ip", "client_ip", "cs-uri-stem", "uri", "method",
        "cs-method",
    ]

    private static func parseJSONLine(_ line: UnsafeBufferPointer<UInt8>, _ emit: (consuming RecordOutcome) -> Void) {
        let value: JSONValue
        do { value = try JSONParser.parse(bytes: line) } catch {
            emit(.skipped(.malformedJSON, detail: error.description))
            return
        }
        if case .array(let items) = value {
            for item in items { emit(jsonRecord(item)) }
        } else {
            emit(jsonRecord(value))
        }
    }

    private static func jsonRecord(_ value: JSONValue) -> RecordOutcome {
        guard case .object(let members) = value else { return .skipped(.malformedJSON, detail: "a record must be a JSON object") }
        let payload: CMCDPayload
        do throws(CMCDDecodingError) {
            switch value["cmcd"] {
            case .object?:
                payload = try CMCDDecoder.decodeJSON(value["cmcd"]!)
            case .string(let text)?:
                payload = text.contains("=") && !text.contains("%") ? try CMCDPayload(raw: text) : try CMCDDecoder.decodeQuery(text)
            case nil:
                let cmcdMembers = members.filter { !Self.jsonMetadataKeys.contains($0.key) }
                guard !cmcdMembers.isEmpty else { return .skipped(.noCMCD, detail: "no CMCD keys in the record") }
                payload = try CMCDDecoder.decodeJSON(.object(cmcdMembers))
            default:
                return .skipped(.noCMCD, detail: "'cmcd' must be an object or a string")
            }
        } catch {
            return Self.skip(for: error)
        }
        let time: Int64?
        switch value["timestamp"] ?? value["time"] ?? value["@timestamp"] {
        case .int(let n)?: time = Self.normaliseEpoch(n)
        case .double(let d)?: time = d.isFinite && abs(d) < 1e15 ? Self.normaliseEpoch(Int64((d < 1e11 ? d * 1000 : d).rounded())) : nil
        case .string(let s)?: time = Self.parseTimestampText(s)
        case nil: time = payload.timestamp.flatMap(Self.normaliseEpoch)
        default: time = nil
        }
        guard let time else { return .skipped(.badTimestamp, detail: "record without a valid timestamp") }
        guard let sid = payload.sessionID, !sid.isEmpty else { return .skipped(.noSessionID, detail: "CMCD without a session id") }
        var sample = Sample(time: time, sessionID: sid, contentID: payload.contentID, cmcd: payload)
        if let edge = (value["edge_location"] ?? value["x-edge-location"] ?? value["x_edge_location"])?.stringValue {
            sample.edgeLocation = String(edge.prefix(64))
        }
        switch value["status"] ?? value["sc-status"] {
        case .int(let n)?: sample.httpStatus = (0...999).contains(n) ? Int(n) : nil
        case .string(let s)?: sample.httpStatus = Int(s).flatMap { (0...999).contains($0) ? $0 : nil }
        default: break
        }
        switch value["time_taken"] ?? value["time-taken"] {
        case .double(let d)?: sample.timeTaken = d.isFinite && d >= 0 ? d : nil
        case .int(let n)?: sample.timeTaken = n >= 0 ? Double(n) : nil
        default: break
        }
        return .sample(sample)
    }

    // MARK: Helpers

    private static func skip(for error: CMCDDecodingError) -> RecordOutcome {
        switch error {
        case .unsupportedVersion: return .skipped(.unsupportedVersion, detail: error.description)
        case .noCMCD: return .skipped(.noCMCD, detail: error.description)
        default: return .skipped(.malformedCMCD, detail: error.description)
        }
    }

    /// Epoch milliseconds from the earliest plausible time (2000-01-01) to 2200-01-01.
    static let plausibleEpochMs: ClosedRange<Int64> = 946_684_800_000...7_258_118_400_000

    /// Accepts epoch seconds or milliseconds (told apart by magnitude).
    static func normaliseEpoch(_ n: Int64) -> Int64? {
        let ms = n < 100_000_000_000 ? n &* 1000 : n
        return plausibleEpochMs.contains(ms) ? ms : nil
    }

    /// Parses `1720015623.481` (seconds, `scale` 1000) or `1720015623481` (ms, `scale` 1) to ms.
    static func parseEpochNumber(_ bytes: UnsafeBufferPointer<UInt8>, scale: Int64) -> Int64? {
        // The usual `1720015641.207` (ten digits, a point, three digits): the first eight
        // digits as one word.
        if scale == 1000, bytes.count == 14, let base = bytes.baseAddress, base[10] == UInt8(ascii: "."),
            let high = ByteWords.eightDigits(ByteWords.load(base))
        {
            let rest = (base[8], base[9], base[11], base[12], base[13])
            if rest.0 &- 0x30 < 10, rest.1 &- 0x30 < 10, rest.2 &- 0x30 < 10, rest.3 &- 0x30 < 10, rest.4 &- 0x30 < 10 {
                let seconds = Int64(high) &* 100 &+ Int64(rest.0 &- 0x30) &* 10 &+ Int64(rest.1 &- 0x30)
                let ms = seconds &* 1000 &+ Int64(rest.2 &- 0x30) &* 100 &+ Int64(rest.3 &- 0x30) &* 10 &+ Int64(rest.4 &- 0x30)
                return plausibleEpochMs.contains(ms) ? ms : nil
            }
        }
        // At most 15 digits before the point and 9 after: no arithmetic below can overflow.
        var whole: Int64 = 0
        var i = 0
        var digits = 0
        while i < bytes.count, bytes[i] &- 0x30 < 10 {
            digits &+= 1
            if digits > 15 { return nil }
            whole = whole &* 10 &+ Int64(bytes[i] &- 0x30)
            i &+= 1
        }
        guard digits > 0 else { return nil }
        var ms = whole &* scale
        if i < bytes.count {
            guard bytes[i] == UInt8(ascii: "."), scale == 1000 else { return nil }
            i &+= 1
            var fraction: Int64 = 0
            var fractionDigits = 0
            while i < bytes.count, bytes[i] &- 0x30 < 10 {
                fractionDigits &+= 1
                if fractionDigits > 9 { return nil }
                if fractionDigits <= 3 { fraction = fraction &* 10 &+ Int64(bytes[i] &- 0x30) }  // below a millisecond: dropped
                i &+= 1
            }
            guard i == bytes.count, fractionDigits > 0 else { return nil }
            switch fractionDigits {
            case 1: fraction &*= 100
            case 2: fraction &*= 10
            default: break
            }
            ms &+= fraction
        }
        return plausibleEpochMs.contains(ms) ? ms : nil
    }

    /// ISO 8601 / RFC 3339 UTC (`2024-07-03T14:07:03.481Z`) or a numeric string.
    static func parseTimestampText(_ s: String) -> Int64? {
        if let n = Int64(s) { return normaliseEpoch(n) }
        var copy = s
        return copy.withUTF8 { bytes -> Int64? in
            if let ms = parseEpochNumber(bytes, scale: 1000) { return ms }
            return RFC3339.parse(bytes)
        }
    }

    static func parseSmallInt(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        guard bytes.count <= 6 else { return nil }
        var n = 0
        for b in bytes {
            guard b >= 0x30, b <= 0x39 else { return nil }
            n = n * 10 + Int(b - 0x30)
        }
        return n
    }

    static func parseSeconds(_ bytes: UnsafeBufferPointer<UInt8>) -> Double? {
        guard bytes.count <= 24 else { return nil }
        // CloudFront writes milliseconds: digits, a point, three digits.
        let n = bytes.count
        // The usual `0.213` (under ten seconds) as four digits.
        if n == 5, let b = bytes.baseAddress, b[1] == UInt8(ascii: ".") {
            let (d0, d1, d2, d3) = (b[0] &- 0x30, b[2] &- 0x30, b[3] &- 0x30, b[4] &- 0x30)
            if d0 < 10, d1 < 10, d2 < 10, d3 < 10 {
                return Double(Int(d0) &* 1000 &+ Int(d1) &* 100 &+ Int(d2) &* 10 &+ Int(d3)) / 1000
            }
        }
        if n >= 5, n <= 15, bytes[n &- 4] == UInt8(ascii: ".") {
            var mantissa: Int64 = 0
            var plain = true
            for k in 0..<n where k != n &- 4 {
                let d = bytes[k] &- 0x30
                if d >= 10 { plain = false }
                mantissa = mantissa &* 10 &+ Int64(d)  // at most 14 digits: no overflow
            }
            if plain { return Double(mantissa) / 1000 }
        }
        // Other plain decimals (`12`, `0.5`, `1.0005`): digits, a point, digits, read as an
        // integer over a power of ten.
        // Both are exact doubles below 2^53 and 10^22, so the quotient is correctly rounded,
        // just as `Double(String)` gives.
        var mantissa: Int64 = 0
        var digits = 0
        var fractionDigits = -1
        for b in bytes {
            if b >= 0x30, b <= 0x39 {
                digits += 1
                if digits > 15 { break }  // no longer exact (and no overflow): the general reader decides
                mantissa = mantissa * 10 + Int64(b - 0x30)
                if fractionDigits >= 0 { fractionDigits += 1 }
            } else if b == UInt8(ascii: "."), fractionDigits < 0 {
                fractionDigits = 0
            } else {
                digits = 99  // anything else: the general reader decides
                break
            }
        }
        if digits > 0, digits <= 15, fractionDigits != 0 {
            return fractionDigits < 0 ? Double(mantissa) : Double(mantissa) / Self.powersOfTen[fractionDigits]
        }
        guard let d = Double(String(decoding: bytes, as: UTF8.self)), d.isFinite, d >= 0 else { return nil }
        return d
    }

    static let powersOfTen: [Double] = (0...15).map { (0..<$0).reduce(1.0) { r, _ in r * 10 } }

    /// Printable ASCII only, at most `max` bytes: other bytes become `?`.
    static func boundedText(_ bytes: UnsafeBufferPointer<UInt8>, max: Int) -> String {
        var unshared = InternedStrings(capacity: 0)
        return boundedText(bytes, max: max, sharing: &unshared)
    }

    /// Like `boundedText(_:max:)`, taking text that needs no repair from `strings`.
    static func boundedText(_ bytes: UnsafeBufferPointer<UInt8>, max: Int, sharing strings: inout InternedStrings) -> String {
        let slice = UnsafeBufferPointer(rebasing: bytes[0..<min(bytes.count, max)])
        if ByteWords.isPrintableASCII(slice) { return strings.string(slice) }
        return String(decoding: slice.map { $0 >= 0x20 && $0 <= 0x7E ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
    }
}
