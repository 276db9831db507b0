/// RFC 3339 timestamps in UTC with milliseconds (`2024-07-03T14:07:03.481Z`), without Foundation.
public enum RFC3339 {
    /// Formats epoch milliseconds.
    public static func format(milliseconds ms: Int64) -> String {
        let parts = fields(milliseconds: ms)
        guard (0...9999).contains(parts.0) else { return formatAnyYear(parts) }
        return String(unsafeUninitializedCapacity: 24) { buffer in
            write(parts, into: buffer.baseAddress!)
            return 24
        }
    }

    /// Appends the formatted time (`format`'s text) to `out` without making a String.
    public static func append(milliseconds ms: Int64, to out: inout [UInt8]) {
        let parts = fields(milliseconds: ms)
        guard (0...9999).contains(parts.0) else { return out.append(contentsOf: formatAnyYear(parts).utf8) }
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { buffer in
            write(parts, into: buffer.baseAddress!)
            out.append(contentsOf: UnsafeBufferPointer(start: buffer.baseAddress!, count: 24))
        }
    }

    /// Year, month, day, hour, minute, second and millisecond (UTC).
    static func fields(milliseconds ms: Int64) -> (Int64, Int64, Int64, Int64, Int64, Int64, Int64) {
        let days = ms >= 0 ? ms / 86_400_000 : (ms - 86_399_999) / 86_400_000
        let msOfDay = ms - days * 86_400_000
        let (y, m, d) = civil(fromDays: days)
        return (y, m, d, msOfDay / 3_600_000, msOfDay / 60_000 % 60, msOfDay / 1000 % 60, msOfDay % 1000)
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` into 24 bytes at `p`: each field's digits, then the
    /// character after it.
    private static func write(_ f: (Int64, Int64, Int64, Int64, Int64, Int64, Int64), into p: UnsafeMutablePointer<UInt8>) {
        let values: InlineArray<7, Int64> = [f.0, f.1, f.2, f.3, f.4, f.5, f.6]
        let widths: InlineArray<7, Int> = [4, 2, 2, 2, 2, 2, 3]
        let after: InlineArray<7, UInt8> = [0x2D, 0x2D, 0x54, 0x3A, 0x3A, 0x2E, 0x5A]  // - - T : : . Z
        var offset = 0
        for field in 0..<7 {
            var value = values[field]
            for i in stride(from: offset + widths[field] - 1, through: offset, by: -1) {
                p[i] = 0x30 &+ UInt8(truncatingIfNeeded: value % 10)
                value /= 10
            }
            offset += widths[field]
            p[offset] = after[field]
            offset += 1
        }
    }

    /// Any year, each field padded to its width at least (the general, slower form; the years
    /// 0 to 9999 give the fixed 24-character text).
    static func formatAnyYear(_ f: (Int64, Int64, Int64, Int64, Int64, Int64, Int64)) -> String {
        func pad(_ v: Int64, _ width: Int) -> String {
            let s = String(v)
            return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
        }
        return "\(pad(f.0, 4))-\(pad(f.1, 2))-\(pad(f.2, 2))T\(pad(f.3, 2)):\(pad(f.4, 2)):\(pad(f.5, 2)).\(pad(f.6, 3))Z"
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to epoch milliseconds.
    public static func parse(_ text: String) -> Int64? {
        var copy = text
        return copy.withUTF8 { parse($0) }
    }

    public static func parse(_ b: UnsafeBufferPointer<UInt8>) -> Int64? {
        guard b.count >= 20, b.count <= 40 else { return nil }
        func num(_ start: Int, _ len: Int) -> Int64? {
            var v: Int64 = 0
            for i in start..<(start + len) {
                guard b[i] >= 0x30, b[i] <= 0x39 else { return nil }
                v = v * 10 + Int64(b[i] - 0x30)
            }
            return v
        }
        guard let y = num(0, 4), b[4] == UInt8(ascii: "-"), let mo = num(5, 2), b[7] == UInt8(ascii: "-"), let d = num(8, 2),
            b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t") || b[10] == 0x20,
            let h = num(11, 2), b[13] == UInt8(ascii: ":"), let mi = num(14, 2), b[16] == UInt8(ascii: ":"), let s = num(17, 2),
            (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, s < 61
        else { return nil }
        var i = 19
        var millis: Int64 = 0
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            var factor: Int64 = 100
            let start = i
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
                millis += Int64(b[i] - 0x30) * factor
                factor /= 10
                i += 1
            }
            guard i > start else { return nil }
        }
        guard i < b.count else { return nil }
        var offsetMinutes: Int64 = 0
        if b[i] == UInt8(ascii: "Z") || b[i] == UInt8(ascii: "z") {
            i += 1
        } else if b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") {
            guard i + 6 == b.count, let oh = num(i + 1, 2), b[i + 3] == UInt8(ascii: ":"), let om = num(i + 4, 2) else { return nil }
            offsetMinutes = (oh * 60 + om) * (b[i] == UInt8(ascii: "-") ? -1 : 1)
            i += 6
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        let days = daysFromCivil(y, mo, d)
        return ((days * 24 + h) * 60 + mi - offsetMinutes) * 60_000 + s * 1000 + millis
    }

    static func daysFromCivil(_ y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? y + 1 : y, m, d)
    }
}
