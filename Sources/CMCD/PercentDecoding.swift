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
        let (written, plus) = output.withUnsafeMutableBufferPointer { buffer in
            decode(source, count: n, into: buffer.baseAddress!, plusAsSpace: plusAsSpace)
        }
        return (written, plus || written != n)
    }

    /// The decoding loop over raw pointers (locals in registers, no bounds checks): returns
    /// the bytes written and whether a `+` became a space. Eight bytes at a time are tested
    /// for a special byte and copied as they are when there is none.
    @inline(__always)
    private static func decode(
        _ source: UnsafePointer<UInt8>, count n: Int, into out: UnsafeMutablePointer<UInt8>, plusAsSpace: Bool
    ) -> (Int, Bool) {
        var written = 0
        var plus = false
        var i = 0
        // `written <= i` always, so an 8-byte store at `out + written` stays within n bytes.
        while i &+ 8 <= n {
            let word = ByteWords.load(source + i)
            var special = ByteWords.equal(word, UInt8(ascii: "%"))
            if plusAsSpace { special |= ByteWords.equal(word, UInt8(ascii: "+")) }
            UnsafeMutableRawPointer(out + written).storeBytes(of: UInt64(littleEndian: word), as: UInt64.self)
            if special == 0 {
                i &+= 8
                written &+= 8
                continue
            }
            let k = ByteWords.firstFlagged(special)
            i &+= k
            written &+= k
            decodeSpecial(source, n, out, &i, &written, &plus)
        }
        while i < n {
            let c = source[i]
            if c == UInt8(ascii: "%") || (c == UInt8(ascii: "+") && plusAsSpace) {
                decodeSpecial(source, n, out, &i, &written, &plus)
            } else {
                out[written] = c
                i &+= 1
                written &+= 1
            }
        }
        return (written, plus)
    }

    /// Decodes the `%` or `+` at `i`.
    @inline(__always)
    private static func decodeSpecial(
        _ source: UnsafePointer<UInt8>, _ n: Int, _ out: UnsafeMutablePointer<UInt8>, _ i: inout Int, _ written: inout Int,
        _ plus: inout Bool
    ) {
        let c = source[i]
        if c == UInt8(ascii: "+") {
            out[written] = 0x20
            plus = true
            i &+= 1
        } else if i &+ 2 < n, let hi = hexValue(source[i &+ 1]), let lo = hexValue(source[i &+ 2]) {
            out[written] = hi << 4 | lo
            i &+= 3
        } else {
            out[written] = c  // a malformed escape stays as it is
            i &+= 1
        }
        written &+= 1
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
