/// Percent-decoding (`%XX`), optionally with `+` as space (form URL-encoding).
///
/// Malformed escapes (`%G1`, a trailing `%`) are kept as they are, as browsers do.
public enum PercentDecoding {
    /// Decodes `input` into `output` (cleared first). Returns whether anything changed.
    @discardableResult
    public static func decode(_ input: UnsafeBufferPointer<UInt8>, plusAsSpace: Bool, into output: inout [UInt8]) -> Bool {
        let (length, changed) = decode(input, plusAsSpace: plusAsSpace, intoPrefixOf: &output)
        output.removeLast(output.count - length)
        return changed
    }

    /// Decodes `input` into the first bytes of `output`, which only ever grows (so a reused
    /// buffer costs nothing per call): returns how many bytes were written and whether
    /// anything changed.
    static func decode(_ input: UnsafeBufferPointer<UInt8>, plusAsSpace: Bool, intoPrefixOf output: inout [UInt8]) -> (length: Int, changed: Bool) {
        let n = input.count
        // Decoding never grows the text.
        if output.count < n { output.append(contentsOf: repeatElement(0, count: n - output.count)) }
        guard n > 0, let source = input.baseAddress else { return (0, false) }
        var written = 0
        var plus = false
        output.withUnsafeMutableBufferPointer { buffer in hexTable.withUnsafeBufferPointer { hex in
            let out = buffer.baseAddress!
            var i = 0
            while i < n {
                let c = source[i]
                out[written] = c  // the common case; replaced below when the byte is special
                if c == UInt8(ascii: "%"), i + 2 < n {
                    let hi = hex[Int(source[i + 1])]
                    let lo = hex[Int(source[i + 2])]
                    if hi | lo < 16 {
                        out[written] = hi << 4 | lo
                        i += 2
                    }
                } else if c == UInt8(ascii: "+"), plusAsSpace {
                    out[written] = 0x20
                    plus = true
                }
                written += 1
                i += 1
            }
        } }
        return (written, plus || written != n)
    }

    /// Hex digit values; 0xFF for anything else.
    private static let hexTable: [UInt8] = (0..<256).map { c in hexValue(UInt8(c)) ?? 0xFF }

    public static func decode(_ text: String, plusAsSpace: Bool) -> String {
        guard text.utf8.contains(UInt8(ascii: "%")) || (plusAsSpace && text.utf8.contains(UInt8(ascii: "+"))) else {
            return text
        }
        var copy = text
        var out: [UInt8] = []
        copy.withUTF8 { _ = decode($0, plusAsSpace: plusAsSpace, into: &out) }
        return String(decoding: out, as: UTF8.self)
    }

    @inline(__always) static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }

    /// Whether the bytes still look URL-encoded: they hold a `%XX` escape but none of the
    /// separators an unencoded CMCD payload would have (`=`, `,`).
    public static func looksEncoded(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var hasEscape = false
        var i = 0
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "=") || c == UInt8(ascii: ",") { return false }
            if c == UInt8(ascii: "%"), i + 2 < bytes.count, hexValue(bytes[i + 1]) != nil, hexValue(bytes[i + 2]) != nil {
                hasEscape = true
            }
            i += 1
        }
        return hasEscape
    }
}
