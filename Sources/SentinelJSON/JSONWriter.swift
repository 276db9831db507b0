/// Serialises `JSONValue` to compact JSON text (one line, no trailing newline).
///
/// Strings are escaped per RFC 8259; control characters, quotes, backslashes and the
/// line separators U+2028/U+2029 are written as escapes, so output is always one line.
public enum JSONWriter {
    public static func string(_ value: JSONValue) -> String {
        // Written as bytes, then made a string once: appending to a `String` piece by piece
        // costs several times as much.
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(value, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Doubles print without exponent for ordinary magnitudes; non-finite values,
    /// which JSON cannot carry, print as `null`.
    public static func formatDouble(_ d: Double) -> String {
        guard d.isFinite else { return "null" }
        if d == d.rounded(), abs(d) < 1e15 { return String(Int64(d)) }
        return "\(d)"
    }

    public static func writeString(_ s: String, into out: inout String) {
        out += "\""
        var needsEscape = false
        for byte in s.utf8 where byte < 0x20 || byte == 0x22 || byte == 0x5C || byte == 0xE2 {
            needsEscape = true
            break
        }
        if !needsEscape {
            out += s
            out += "\""
            return
        }
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{2028}": out += "\\u2028"
            case "\u{2029}": out += "\\u2029"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }

    // MARK: - Into bytes

    /// The value's text appended to UTF-8 bytes, with no String in between.
    public static func write(_ value: JSONValue, into out: inout [UInt8]) {
        switch value {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .int(let i): writeInt(i, into: &out)
        case .double(let d): out.append(contentsOf: formatDouble(d).utf8)
        case .string(let s): writeString(s, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                write(item, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (index, member) in members.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                writeString(member.key, into: &out)
                out.append(UInt8(ascii: ":"))
                write(member.value, into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// Decimal digits of `i`, as `String(i)` writes them.
    static func writeInt(_ i: Int64, into out: inout [UInt8]) {
        forEachDecimalByte(of: i) { out.append($0) }
    }

    /// The bytes of `i` in decimal (a `-` first when negative), most significant first, as
    /// `String(i)` writes them, without making a String.
    @inline(__always)
    public static func forEachDecimalByte(of i: Int64, _ body: (UInt8) -> Void) {
        if i < 0 { body(UInt8(ascii: "-")) }
        var n = i.magnitude
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var count = 0
            repeat {
                digits[count] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: n % 10)
                count &+= 1
                n /= 10
            } while n > 0
            while count > 0 {
                count &-= 1
                body(digits[count])
            }
        }
    }

    public static func writeString(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var s = s
        let clean = s.withUTF8 { bytes in
            for byte in bytes where byte < 0x20 || byte == 0x22 || byte == 0x5C || byte == 0xE2 { return false }
            out.append(contentsOf: bytes)
            return true
        }
        if !clean {
            // Rare (quotes, controls, U+2028/9 in viewer data): the String writer's escapes.
            var escaped = ""
            writeString(s, into: &escaped)
            out.append(contentsOf: escaped.utf8.dropFirst())
            return
        }
        out.append(UInt8(ascii: "\""))
    }
}

