/// A finding's summary, written with string interpolation into one fixed buffer and made a
/// `String` once. The standard interpolation formats every number as a `String` of its own
/// and grows its storage piece by piece; for a finding that cost more than the detection
/// that found it, which matters most when many sessions fire at once.
///
/// Numbers are written as `\(n)` for integers, `\(oneDecimal: x)` for a value already
/// rounded to one decimal (a drop percentage: the text `Double.description` gives for it),
/// and `\(seconds: ms)` for a duration in tenths of a second. Text past `capacity` bytes is
/// cut (summaries hold no viewer text, only numbers, so they stay well below it).
struct SummaryText: ExpressibleByStringInterpolation {
    static let capacity = 256
    let text: String

    init(stringLiteral value: StaticString) {
        var builder = Builder(literalCapacity: 0, interpolationCount: 0)
        builder.appendLiteral(value)
        text = builder.string
    }

    init(stringInterpolation builder: Builder) { text = builder.string }

    struct Builder: StringInterpolationProtocol {
        typealias StringLiteralType = StaticString

        // 256 bytes, in place (no allocation until the final `String`).
        private var storage: (
            UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
            UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64
        ) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        private var count = 0

        init(literalCapacity: Int, interpolationCount: Int) {}

        var string: String {
            withUnsafeBytes(of: storage) { String(decoding: UnsafeRawBufferPointer(rebasing: $0[0..<count]), as: UTF8.self) }
        }

        private mutating func append(_ bytes: UnsafeRawBufferPointer) {
            let n = min(bytes.count, SummaryText.capacity - count)
            guard n > 0, let source = bytes.baseAddress else { return }
            let start = count
            withUnsafeMutableBytes(of: &storage) { $0.baseAddress!.advanced(by: start).copyMemory(from: source, byteCount: n) }
            count += n
        }

        mutating func appendLiteral(_ literal: StaticString) {
            literal.withUTF8Buffer { append(UnsafeRawBufferPointer($0)) }
        }

        mutating func appendInterpolation(_ text: String) {
            var text = text
            text.withUTF8 { append(UnsafeRawBufferPointer($0)) }
        }

        mutating func appendInterpolation(_ n: Int64) {
            // Digits from the end of a 20-byte scratch word run, then copied in order.
            var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
            withUnsafeMutableBytes(of: &digits) { scratch in
                var i = 24
                var magnitude = n.magnitude
                repeat {
                    i -= 1
                    scratch[i] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10)
                    magnitude /= 10
                } while magnitude > 0
                if n < 0 {
                    i -= 1
                    scratch[i] = UInt8(ascii: "-")
                }
                append(UnsafeRawBufferPointer(rebasing: scratch[i..<24]))
            }
        }

        /// A value rounded to one decimal (`(x * 10).rounded() / 10`), as `Double.description`
        /// writes it: `72.5`, `70.0`.
        mutating func appendInterpolation(oneDecimal value: Double) {
            guard value.isFinite, abs(value) < 1e15 else {
                appendInterpolation(value.description)
                return
            }
            let tenths = Int64((value * 10).rounded())
            if tenths < 0 { appendLiteral("-") }
            appendInterpolation(Int64(tenths.magnitude / 10))
            appendLiteral(".")
            appendInterpolation(Int64(tenths.magnitude % 10))
        }

        /// A duration in milliseconds as seconds with one decimal, rounded half away from
        /// zero: `4.0 s`, `-1.5 s`.
        mutating func appendInterpolation(seconds ms: Int64) {
            let tenths = (ms.magnitude + 50) / 100
            if ms < 0, tenths > 0 { appendLiteral("-") }
            appendInterpolation(Int64(tenths / 10))
            appendLiteral(".")
            appendInterpolation(Int64(tenths % 10))
            appendLiteral(" s")
        }
    }
}
