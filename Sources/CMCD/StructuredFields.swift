/// RFC 8941 structured field values, as CMCD uses them.

/// A bare item: the scalar at the bottom of every structured field value.
public enum SFBareItem: Sendable, Hashable {
    case integer(Int64)
    case decimal(Double)
    case string(String)
    case token(String)
    case boolean(Bool)
    case byteSequence(String)  // the base64 text between the colons, undecoded
}

/// A named parameter (`;v`, `;r="0-99"`).
public struct SFParameter: Sendable, Hashable {
    public var key: String
    public var value: SFBareItem
    public init(key: String, value: SFBareItem) {
        self.key = key
        self.value = value
    }
}

/// An item: a bare item with parameters.
public struct SFItem: Sendable, Hashable {
    public var value: SFBareItem
    public var parameters: [SFParameter]
    public init(_ value: SFBareItem, parameters: [SFParameter] = []) {
        self.value = value
        self.parameters = parameters
    }
}

/// A dictionary member's value: an item or an inner list.
public enum SFMember: Sendable, Hashable {
    case item(SFItem)
    case innerList([SFItem], parameters: [SFParameter])

    public static func bare(_ value: SFBareItem) -> SFMember { .item(SFItem(value)) }
}

/// One member of a parsed dictionary, in wire order.
public typealias SFDictionaryMember = CMCDEntry

/// Why a structured field could not be parsed.
public struct SFParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public let offset: Int
    public let reason: String
    public var description: String { "\(reason) at character \(offset + 1)" }
}

/// Parses RFC 8941 dictionaries from bytes, within limits that bound the work any
/// input can cause.
public struct SFDictionaryParser {
    public struct Limits: Sendable {
        /// Members in one dictionary.
        public var maxMembers: Int = 128
        /// Items in one inner list, and parameters on one item.
        public var maxListItems: Int = 64
        /// Bytes in one string, token or key.
        public var maxStringBytes: Int = 2048
        public init() {}
    }

    public static func parse(_ text: String, limits: Limits = Limits()) throws(SFParseError) -> [SFDictionaryMember] {
        var copy = text
        let result = copy.withUTF8 { buffer in Result { () throws(SFParseError) in try parse(bytes: buffer, limits: limits) } }
        return try result.get()
    }

    /// Parses a whole dictionary; leading and trailing spaces are ignored.
    public static func parse(bytes: UnsafeBufferPointer<UInt8>, limits: Limits = Limits()) throws(SFParseError) -> [SFDictionaryMember] {
        var cursor = Cursor(bytes: bytes, limits: limits)
        var dropped: [CMCDIgnoredKey] = []
        return try cursor.parseDictionary(dropped: &dropped)
    }

    /// Parses a dictionary the way a receiver of real players' CMCD must: decimals with more
    /// than three fractional digits are rounded to three, UTF-8 in strings is kept, and a
    /// member that still cannot be read is left out alone (listed in `dropped` with its key
    /// and reason) while every other member is kept. Only more than `limits.maxMembers`
    /// members fail it.
    public static func parse(
        bytes: UnsafeBufferPointer<UInt8>, limits: Limits = Limits(), dropped: inout [CMCDIgnoredKey]
    ) throws(SFParseError) -> [SFDictionaryMember] {
        var cursor = Cursor(bytes: bytes, limits: limits, lenient: true)
        return try cursor.parseDictionary(dropped: &dropped)
    }

    struct Cursor {
        let bytes: UnsafeBufferPointer<UInt8>
        let limits: Limits
        /// Reads what real players send beyond RFC 8941 (see `SFDictionaryParser.parse(bytes:limits:dropped:)`).
        let lenient: Bool
        var index = 0

        init(bytes: UnsafeBufferPointer<UInt8>, limits: Limits, lenient: Bool = false) {
            self.bytes = bytes
            self.limits = limits
            self.lenient = lenient
        }

        func fail(_ reason: String) -> SFParseError { SFParseError(offset: index, reason: reason) }

        @inline(__always) var atEnd: Bool { index >= bytes.count }
        @inline(__always) var current: UInt8 { bytes[index] }

        mutating func skipSpaces() {
            while index < bytes.count, bytes[index] == 0x20 { index += 1 }
        }

        mutating func skipOWS() {
            while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x09 { index += 1 }
        }

        mutating func parseDictionary(dropped: inout [CMCDIgnoredKey]) throws(SFParseError) -> [SFDictionaryMember] {
            var members: [SFDictionaryMember] = []
            try scanDictionary(dropped: &dropped) { cursor, keyRange throws(SFParseError) in
                let key = cursor.makeASCIIString(keyRange.lowerBound, keyRange.upperBound)
                let member = try cursor.parseMemberValue(materialize: true)
                try cursor.expectMemberEnd()
                if let existing = members.firstIndex(where: { $0.key == key }) {
                    members[existing].value = member  // RFC 8941: the last value wins
                } else {
                    members.append(SFDictionaryMember(key: key, value: member))
                }
            }
            return members
        }

        /// Walks a dictionary: for each member, `visit` gets the key's byte range and must
        /// consume the value with `parseMemberValue`, then call `expectMemberEnd` before it
        /// keeps anything. Leading and trailing spaces are ignored. A lenient cursor drops a
        /// member it cannot read (appending its key and reason to `dropped`) and goes on at
        /// the next top-level comma; a strict one throws.
        mutating func scanDictionary(
            dropped: inout [CMCDIgnoredKey], _ visit: (inout Cursor, Range<Int>) throws(SFParseError) -> Void
        ) throws(SFParseError) {
            skipSpaces()
            var end = bytes.count
            while end > index, bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 { end -= 1 }
            var inner = Cursor(bytes: UnsafeBufferPointer(rebasing: bytes[0..<end]), limits: limits, lenient: lenient)
            inner.index = index
            defer { index = inner.index }
            if inner.atEnd { return }
            var count = 0
            while true {
                count += 1
                // Too many members fails even a lenient scan: no record needs them.
                guard count <= limits.maxMembers else { throw inner.fail("more than \(limits.maxMembers) keys") }
                let memberStart = inner.index
                var keyRange: Range<Int>?
                do throws(SFParseError) {
                    keyRange = try inner.parseKeyRange()
                    try visit(&inner, keyRange!)
                    inner.skipOWS()
                    guard inner.atEnd || inner.current == UInt8(ascii: ",") else { throw inner.fail("expected ',' after a member") }
                } catch {
                    guard lenient else { throw error }
                    inner.dropMember(from: memberStart, key: keyRange, error, into: &dropped)
                }
                if inner.atEnd { return }
                inner.index += 1
                inner.skipOWS()
                if inner.atEnd {
                    let error = inner.fail("trailing comma")
                    guard lenient else { throw error }
                    dropped.append(CMCDIgnoredKey(key: "", reason: error.description))
                    return
                }
            }
        }

        /// Fails unless the member's value ends here (at the end, or before optional spaces
        /// and a comma): a visitor checks this before it keeps a value, so that a lenient
        /// scan never keeps part of a member it then drops.
        @inline(__always)
        func expectMemberEnd() throws(SFParseError) {
            var i = index
            while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 { i &+= 1 }
            guard i == bytes.count || bytes[i] == UInt8(ascii: ",") else { throw fail("unexpected character after a value") }
        }

        /// Records a member that could not be read and moves to the comma that ends it (outside
        /// strings and inner lists), or to the end.
        @inline(never)
        mutating func dropMember(from start: Int, key: Range<Int>?, _ error: SFParseError, into dropped: inout [CMCDIgnoredKey]) {
            let name = key.map { makeASCIIString($0.lowerBound, min($0.upperBound, $0.lowerBound + 64)) } ?? ""
            dropped.append(CMCDIgnoredKey(key: name, reason: error.description))
            var i = start
            var inString = false
            var depth = 0
            while i < bytes.count {
                let c = bytes[i]
                if inString {
                    if c == UInt8(ascii: "\\") {
                        i += 1
                    } else if c == UInt8(ascii: "\"") {
                        inString = false
                    }
                } else if c == UInt8(ascii: "\"") {
                    inString = true
                } else if c == UInt8(ascii: "(") {
                    depth += 1
                } else if c == UInt8(ascii: ")") {
                    depth = max(depth - 1, 0)
                } else if c == UInt8(ascii: ","), depth == 0 {
                    break
                }
                i += 1
            }
            index = min(i, bytes.count)
        }

        /// The value after a key: `=` and an item or inner list, or a bare `true` with
        /// parameters. Without `materialize` the syntax is checked but no value is built.
        mutating func parseMemberValue(materialize: Bool) throws(SFParseError) -> SFMember {
            if !atEnd, current == UInt8(ascii: "=") {
                index += 1
                return try parseItemOrInnerList(materialize: materialize)
            }
            return .item(SFItem(.boolean(true), parameters: try parseParameters(materialize: materialize)))
        }

        @inline(__always) static func isKeyStart(_ c: UInt8) -> Bool {
            (c >= 0x61 && c <= 0x7A) || c == 0x2A || (c >= 0x41 && c <= 0x5A)
        }

        @inline(__always) static func isKeyChar(_ c: UInt8) -> Bool {
            (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == 0x5F || c == 0x2D || c == 0x2E || c == 0x2A
                || (c >= 0x41 && c <= 0x5A)
        }

        /// Keys per RFC 8941, leniently also accepting upper-case letters (seen in custom keys).
        mutating func parseKey() throws(SFParseError) -> String {
            let range = try parseKeyRange()
            return makeASCIIString(range.lowerBound, range.upperBound)
        }

        mutating func parseKeyRange() throws(SFParseError) -> Range<Int> {
            guard !atEnd, Cursor.isKeyStart(current) else { throw fail("expected a key") }
            let start = index
            index &+= 1
            while !atEnd, Cursor.isKeyChar(current) { index &+= 1 }
            guard index - start <= limits.maxStringBytes else { throw fail("key too long") }
            return start..<index
        }

        func makeASCIIString(_ start: Int, _ end: Int) -> String {
            String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
        }

        mutating func parseItemOrInnerList(materialize: Bool = true) throws(SFParseError) -> SFMember {
            if !atEnd, current == UInt8(ascii: "(") {
                index += 1
                var items: [SFItem] = []
                var count = 0
                while true {
                    skipSpaces()
                    guard !atEnd else { throw fail("unterminated inner list") }
                    if current == UInt8(ascii: ")") {
                        index += 1
                        return .innerList(items, parameters: try parseParameters(materialize: materialize))
                    }
                    count += 1
                    guard count <= limits.maxListItems else { throw fail("more than \(limits.maxListItems) list items") }
                    let value = try parseBareItem(materialize: materialize)
                    let parameters = try parseParameters(materialize: materialize)
                    if materialize { items.append(SFItem(value, parameters: parameters)) }
                    guard !atEnd, current == 0x20 || current == UInt8(ascii: ")") else {
                        throw fail("expected ' ' or ')' in inner list")
                    }
                }
            }
            let value = try parseBareItem(materialize: materialize)
            return .item(SFItem(value, parameters: try parseParameters(materialize: materialize)))
        }

        mutating func parseParameters(materialize: Bool = true) throws(SFParseError) -> [SFParameter] {
            guard !atEnd, current == UInt8(ascii: ";") else { return [] }
            var parameters: [SFParameter] = []
            var count = 0
            while !atEnd, current == UInt8(ascii: ";") {
                index += 1
                skipSpaces()
                let keyRange = try parseKeyRange()
                var value = SFBareItem.boolean(true)
                if !atEnd, current == UInt8(ascii: "=") {
                    index += 1
                    value = try parseBareItem(materialize: materialize)
                }
                count += 1
                guard count <= limits.maxListItems else { throw fail("too many parameters") }
                guard materialize else { continue }
                let key = makeASCIIString(keyRange.lowerBound, keyRange.upperBound)
                if let existing = parameters.firstIndex(where: { $0.key == key }) {
                    parameters[existing].value = value
                } else {
                    parameters.append(SFParameter(key: key, value: value))
                }
            }
            return parameters
        }

        mutating func parseBareItem(materialize: Bool = true) throws(SFParseError) -> SFBareItem {
            guard !atEnd else { throw fail("expected a value") }
            let c = current
            switch c {
            case UInt8(ascii: "-"), 0x30...0x39: return try parseNumber()
            case UInt8(ascii: "\""):
                let text = try parseString(materialize: materialize)
                return materialize ? .string(text) : .boolean(true)
            case UInt8(ascii: "?"):
                index += 1
                guard !atEnd else { throw fail("expected ?0 or ?1") }
                let b = current
                index += 1
                if b == UInt8(ascii: "1") { return .boolean(true) }
                if b == UInt8(ascii: "0") { return .boolean(false) }
                index -= 1
                throw fail("expected ?0 or ?1")
            case UInt8(ascii: ":"):
                index += 1
                let start = index
                while !atEnd, current != UInt8(ascii: ":") {
                    let b = current
                    let ok = (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39)
                        || b == 0x2B || b == 0x2F || b == 0x3D
                    guard ok else { throw fail("invalid byte sequence character") }
                    index += 1
                }
                guard !atEnd else { throw fail("unterminated byte sequence") }
                guard index - start <= limits.maxStringBytes else { throw fail("byte sequence too long") }
                let text = materialize ? makeASCIIString(start, index) : ""
                index += 1
                return .byteSequence(text)
            default:
                if (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2A {
                    let start = index
                    try skipToken()
                    return materialize ? .token(makeASCIIString(start, index)) : .boolean(true)
                }
                throw fail("unexpected character")
            }
        }

        @inline(__always) static func isTokenChar(_ c: UInt8) -> Bool {
            // tchar / ":" / "/"
            switch c {
            case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
            case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
                UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
                UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"),
                UInt8(ascii: ":"), UInt8(ascii: "/"):
                return true
            default: return false
            }
        }

        mutating func skipToken() throws(SFParseError) {
            let start = index
            index += 1
            while !atEnd, Cursor.isTokenChar(current) { index += 1 }
            guard index - start <= limits.maxStringBytes else { throw fail("token too long") }
        }

        mutating func parseString(materialize: Bool = true) throws(SFParseError) -> String {
            index += 1
            let start = index
            var hasEscape = false
            while true {
                guard !atEnd else { throw fail("unterminated string") }
                let c = current
                if c == UInt8(ascii: "\\") {
                    hasEscape = true
                    index += 1
                    guard !atEnd, current == UInt8(ascii: "\"") || current == UInt8(ascii: "\\") else {
                        throw fail("invalid escape in string")
                    }
                    index += 1
                    continue
                }
                if c == UInt8(ascii: "\"") { break }
                guard (c >= 0x20 && c <= 0x7E) || (lenient && c >= 0x80) else { throw fail("non-printable character in string") }
                index &+= 1
                index = SFDictionaryParser.skipPlainStringBytes(bytes, from: index)
            }
            let end = index
            index += 1
            guard end - start <= limits.maxStringBytes else { throw fail("string too long") }
            if !materialize { return "" }
            if !hasEscape { return makeASCIIString(start, end) }
            var out: [UInt8] = []
            out.reserveCapacity(end - start)
            var i = start
            while i < end {
                if bytes[i] == UInt8(ascii: "\\") { i += 1 }
                out.append(bytes[i])
                i += 1
            }
            return String(decoding: out, as: UTF8.self)
        }

        mutating func parseNumber() throws(SFParseError) -> SFBareItem {
            var negative = false
            if current == UInt8(ascii: "-") {
                negative = true
                index += 1
            }
            guard !atEnd, current >= 0x30, current <= 0x39 else { throw fail("expected a digit") }
            var integerPart: Int64 = 0
            var digits = 0
            while !atEnd, current >= 0x30, current <= 0x39 {
                digits += 1
                guard digits <= 15 else { throw fail("integer has more than 15 digits") }
                integerPart = integerPart * 10 + Int64(current - 0x30)
                index += 1
            }
            guard !atEnd, current == UInt8(ascii: ".") else {
                return .integer(negative ? -integerPart : integerPart)
            }
            guard digits <= 12 else { throw fail("decimal has more than 12 integer digits") }
            index += 1
            var fraction: Int64 = 0
            var fractionDigits = 0
            // A lenient cursor reads up to 32 fractional digits and rounds to three (half up):
            // dash.js sends a playback rate as JavaScript prints it (`pr=0.9900013331200346`).
            var roundUp = false
            while !atEnd, current >= 0x30, current <= 0x39 {
                fractionDigits += 1
                if fractionDigits > 3 {
                    guard lenient else { throw fail("decimal has more than 3 fractional digits") }
                    guard fractionDigits <= 32 else { throw fail("decimal has more than 32 fractional digits") }
                    if fractionDigits == 4 { roundUp = current >= 0x35 }
                } else {
                    fraction = fraction * 10 + Int64(current - 0x30)
                }
                index += 1
            }
            guard fractionDigits > 0 else { throw fail("decimal ends with '.'") }
            var scale = 1.0
            for _ in 0..<min(fractionDigits, 3) { scale *= 10 }
            if roundUp { fraction += 1 }
            let magnitude = Double(integerPart) + Double(fraction) / scale
            return .decimal(negative ? -magnitude : magnitude)
        }
    }

    /// The index of the first byte at or after `i` that ends a run of plain string bytes
    /// (printable ASCII other than `"` and `\`), testing eight bytes at a time; the caller
    /// looks at that byte itself.
    @inline(__always)
    static func skipPlainStringBytes(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Int {
        guard let base = bytes.baseAddress else { return start }
        var i = start
        let n = bytes.count
        while i &+ 8 <= n {
            let x = ByteWords.load(base + i)
            let stop = ByteWords.equal(x, UInt8(ascii: "\"")) | ByteWords.equal(x, UInt8(ascii: "\\")) | ByteWords.below(x, 0x20)
                | ByteWords.atLeast(x, 0x7F)
            if stop != 0 { return i &+ ByteWords.firstFlagged(stop) }
            i &+= 8
        }
        return i
    }
}
