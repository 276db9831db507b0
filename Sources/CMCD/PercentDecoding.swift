/// Percent-decoding (`%XX`), optionally with `+` as space (form URL-encoding).
///
/// Malformed escapes (`%G1`, a trailing `%`) are kept as they are, as browsers do.
public enum PercentDecoding {
    /// Decodes `input` into `output` (cleared first). Returns whether anything changed.
    @discardableResult
    public static func decode(_ input: UnsafeBufferPointer<UInt8>, plusAsSpace: Bool, into output: inout [UInt8]) -> Bool {
        let n = input.count
        var changed = false
        // Decoding never grows the text: size the output once, write through a pointer, trim.
        if output.count < n { output.append(contentsOf: repeatElement(0, count: n - output.count)) }
        var written = 0
        output.withUnsafeMutableBufferPointer { buffer in
            var i = 0
            while i < n {
                let c = input[i]
                if c == UInt8(ascii: "%"), i + 2 < n, let hi = hexValue(input[i + 1]), let lo = hexValue(input[i + 2]) {
                    buffer[written] = hi << 4 | lo
                    i += 3
                    changed = true
                } else if c == UInt8(ascii: "+"), plusAsSpace {
                    buffer[written] = 0x20
                    i += 1
                    changed = true
                } else {
                    buffer[written] = c
                    i += 1
                }
                written += 1
            }
        }
        output.removeLast(output.count - written)
        return changed
    }

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
