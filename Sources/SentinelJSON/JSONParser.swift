/// A strict RFC 8259 JSON parser with bounds, for input that comes from anywhere.
///
/// Limits: nesting depth (default 32) and total members/elements (default 4096), so a
/// hostile document can neither exhaust the stack nor allocate without bound.
public struct JSONParser {
    public struct Limits: Sendable {
        public var maxDepth: Int
        public var maxElements: Int
        public init(maxDepth: Int = 32, maxElements: Int = 4096) {
            self.maxDepth = maxDepth
            self.maxElements = maxElements
        }
    }

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public let offset: Int
        public let reason: String
        public var description: String { "invalid JSON at byte \(offset): \(reason)" }
    }

    public static func parse(_ text: String, limits: Limits = Limits()) throws(ParseError) -> JSONValue {
        var copy = text
        let result = copy.withUTF8 { buffer in Result { () throws(ParseError) in try parse(bytes: buffer, limits: limits) } }
        return try result.get()
    }

    public static func parse(bytes: UnsafeBufferPointer<UInt8>, limits: Limits = Limits()) throws(ParseError) -> JSONValue {
        var parser = Cursor(bytes: bytes, limits: limits)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw parser.error("unexpected trailing characters") }
        return value
    }

    struct Cursor {
        let bytes: UnsafeBufferPointer<UInt8>
        let limits: Limits
        var index = 0
        var elements = 0

        init(bytes: UnsafeBufferPointer<UInt8>, limits: Limits) {
            self.bytes = bytes
            self.limits = limits
        }

        func error(_ reason: String) -> ParseError { ParseError(offset: index, reason: reason) }

        var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

        mutating func skipWhitespace() {
            while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x09 || bytes[index] == 0x0A || bytes[index] == 0x0D {
                index += 1
            }
        }

        mutating func expectLiteral(_ literal: StaticString) throws(ParseError) {
            let count = literal.utf8CodeUnitCount
            guard index + count <= bytes.count else { throw error("truncated literal") }
            let ok = literal.withUTF8Buffer { lit in
                (0..<count).allSatisfy { bytes[index + $0] == lit[$0] }
            }
            guard ok else { throw error("unknown literal") }
            index += count
        }

        mutating func countElement() throws(ParseError) {
            elements += 1
            if elements > limits.maxElements { throw error("too many elements (limit \(limits.maxElements))") }
        }

        mutating func parseValue(depth: Int) throws(ParseError) -> JSONValue {
            guard let byte = peek else { throw error("unexpected end of input") }
            switch byte {
            case UInt8(ascii: "{"):
                guard depth < limits.maxDepth else { throw error("nesting deeper than \(limits.maxDepth)") }
                index += 1
                var members: [(key: String, value: JSONValue)] = []
                skipWhitespace()
                if peek == UInt8(ascii: "}") { index += 1; return .object(members) }
                while true {
                    skipWhitespace()
                    guard peek == UInt8(ascii: "\"") else { throw error("expected a member name") }
                    let key = try parseString()
                    skipWhitespace()
                    guard peek == UInt8(ascii: ":") else { throw error("expected ':'") }
                    index += 1
                    skipWhitespace()
                    try countElement()
                    let value = try parseValue(depth: depth + 1)
                    members.append((key, value))
                    skipWhitespace()
                    if peek == UInt8(ascii: ",") { index += 1; continue }
                    if peek == UInt8(ascii: "}") { index += 1; return .object(members) }
                    throw error("expected ',' or '}'")
                }
            case UInt8(ascii: "["):
                guard depth < limits.maxDepth else { throw error("nesting deeper than \(limits.maxDepth)") }
                index += 1
                var items: [JSONValue] = []
                skipWhitespace()
                if peek == UInt8(ascii: "]") { index += 1; return .array(items) }
                while true {
                    skipWhitespace()
                    try countElement()
                    items.append(try parseValue(depth: depth + 1))
                    skipWhitespace()
                    if peek == UInt8(ascii: ",") { index += 1; continue }
                    if peek == UInt8(ascii: "]") { index += 1; return .array(items) }
                    throw error("expected ',' or ']'")
                }
            case UInt8(ascii: "\""):
                return .string(try parseString())
            case UInt8(ascii: "t"):
                try expectLiteral("true"); return .bool(true)
            case UInt8(ascii: "f"):
                try expectLiteral("false"); return .bool(false)
            case UInt8(ascii: "n"):
                try expectLiteral("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return try parseNumber()
            default:
                throw error("unexpected character")
            }
        }

        mutating func parseNumber() throws(ParseError) -> JSONValue {
            let start = index
            var isInteger = true
            if peek == UInt8(ascii: "-") { index += 1 }
            guard let first = peek, first >= 0x30, first <= 0x39 else { throw error("expected a digit") }
            if first == 0x30 {
                index += 1
            } else {
                while let d = peek, d >= 0x30, d <= 0x39 { index += 1 }
            }
            if peek == UInt8(ascii: ".") {
                isInteger = false
                index += 1
                guard let d = peek, d >= 0x30, d <= 0x39 else { throw error("expected a digit after '.'") }
                while let d = peek, d >= 0x30, d <= 0x39 { index += 1 }
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                isInteger = false
                index += 1
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { index += 1 }
                guard let d = peek, d >= 0x30, d <= 0x39 else { throw error("expected an exponent digit") }
                while let d = peek, d >= 0x30, d <= 0x39 { index += 1 }
            }
            guard index - start <= 64 else { throw error("number too long") }
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            if isInteger, let i = Int64(text) { return .int(i) }
            guard let d = Double(text) else { throw error("number out of range") }
            return .double(d)
        }

        mutating func parseString() throws(ParseError) -> String {
            index += 1  // opening quote
            var scalars = String.UnicodeScalarView()
            var runStart = index
            var plain = true
            while true {
                guard let byte = peek else { throw error("unterminated string") }
                if byte == UInt8(ascii: "\"") {
                    if plain {
                        let s = String(decoding: UnsafeBufferPointer(rebasing: bytes[runStart..<index]), as: UTF8.self)
                        index += 1
                        return s
                    }
                    scalars.append(contentsOf: String(decoding: UnsafeBufferPointer(rebasing: bytes[runStart..<index]), as: UTF8.self).unicodeScalars)
                    index += 1
                    return String(scalars)
                }
                if byte < 0x20 { throw error("control character in string") }
                if byte == UInt8(ascii: "\\") {
                    plain = false
                    scalars.append(contentsOf: String(decoding: UnsafeBufferPointer(rebasing: bytes[runStart..<index]), as: UTF8.self).unicodeScalars)
                    index += 1
                    guard let escape = peek else { throw error("unterminated escape") }
                    index += 1
                    switch escape {
                    case UInt8(ascii: "\""): scalars.append("\"")
                    case UInt8(ascii: "\\"): scalars.append("\\")
                    case UInt8(ascii: "/"): scalars.append("/")
                    case UInt8(ascii: "b"): scalars.append("\u{08}")
                    case UInt8(ascii: "f"): scalars.append("\u{0C}")
                    case UInt8(ascii: "n"): scalars.append("\n")
                    case UInt8(ascii: "r"): scalars.append("\r")
                    case UInt8(ascii: "t"): scalars.append("\t")
                    case UInt8(ascii: "u"):
                        var code = try parseHex4()
                        if (0xD800..<0xDC00).contains(code) {
                            // A high surrogate must be followed by an escaped low surrogate.
                            guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                                throw error("lone surrogate")
                            }
                            index += 2
                            let low = try parseHex4()
                            guard (0xDC00..<0xE000).contains(low) else { throw error("invalid surrogate pair") }
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        } else if (0xDC00..<0xE000).contains(code) {
                            throw error("lone surrogate")
                        }
                        guard let scalar = Unicode.Scalar(code) else { throw error("invalid code point") }
                        scalars.append(scalar)
                    default:
                        throw error("invalid escape")
                    }
                    runStart = index
                    continue
                }
                index += 1
            }
        }

        mutating func parseHex4() throws(ParseError) -> UInt32 {
            guard index + 4 <= bytes.count else { throw error("truncated \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[index]
                let digit: UInt32
                switch c {
                case 0x30...0x39: digit = UInt32(c - 0x30)
                case 0x41...0x46: digit = UInt32(c - 0x41 + 10)
                case 0x61...0x66: digit = UInt32(c - 0x61 + 10)
                default: throw error("invalid hex digit")
                }
                value = value << 4 | digit
                index += 1
            }
            return value
        }
    }
}
