import CMCD
import CMCDDetection
import CMCDRecords
import SentinelJSON

/// Where line protocol is written: a byte array, or a `PointCursor` writing through a pointer
/// into room reserved beforehand (the writer's path for a request's point, which skips the
/// array's checks on each of its thirty-odd appends).
protocol LineOutput {
    mutating func append(_ byte: UInt8)
    mutating func append(contentsOf bytes: UnsafeBufferPointer<UInt8>)
    mutating func append(contentsOf bytes: UnsafeRawBufferPointer)
    /// Appends `value` in decimal.
    mutating func appendDecimal(_ value: Int64)
    var last: UInt8? { get }
}

extension LineOutput {
    /// Written by `PointCursor`'s digit writer into room on the stack, then appended.
    mutating func appendDecimal(_ value: Int64) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // room for 20 digits and a sign
        withUnsafeMutableBytes(of: &digits) { buffer in
            var cursor = PointCursor(buffer.baseAddress!.assumingMemoryBound(to: UInt8.self))
            cursor.appendDecimal(value)
            append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[..<cursor.count]))
        }
    }
}

extension Array: LineOutput where Element == UInt8 {}

/// Overwrites bytes from `start` on, with no bounds checks: the caller reserves the room, as
/// initialized bytes (`InfluxPoints.maxRequestPointBytes` for a request's point).
struct PointCursor: LineOutput {
    let start: UnsafeMutablePointer<UInt8>
    private(set) var end: UnsafeMutablePointer<UInt8>

    init(_ start: UnsafeMutablePointer<UInt8>) {
        self.start = start
        end = start
    }

    /// Bytes written so far.
    var count: Int { end - start }

    var last: UInt8? { end > start ? end[-1] : nil }

    @inline(__always)
    mutating func append(_ byte: UInt8) {
        end.pointee = byte
        end += 1
    }

    @inline(__always)
    mutating func append(contentsOf bytes: UnsafeBufferPointer<UInt8>) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        end.update(from: base, count: bytes.count)
        end += bytes.count
    }

    @inline(__always)
    mutating func append(contentsOf bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        UnsafeMutableRawPointer(end).copyMemory(from: base, byteCount: bytes.count)
        end += bytes.count
    }

    /// Writes the digits in place, last first, once their count is known: no copy; two at a
    /// time (half the divisions: a point's timestamp has thirteen digits).
    @inline(__always)
    mutating func appendDecimal(_ value: Int64) {
        if value < 0 { append(UInt8(ascii: "-")) }
        var rest = value.magnitude
        var count = 1
        var power: UInt64 = 10
        while count < 20, rest >= power {
            count &+= 1
            power &*= 10
        }
        var i = count
        let pairs = Self.digitPairs.utf8Start
        while rest >= 100 {
            let pair = Int(truncatingIfNeeded: rest % 100) &* 2
            rest /= 100
            i &-= 2
            end[i] = pairs[pair]
            end[i &+ 1] = pairs[pair &+ 1]
        }
        if rest >= 10 {
            let pair = Int(truncatingIfNeeded: rest) &* 2
            end[i &- 2] = pairs[pair]
            end[i &- 1] = pairs[pair &+ 1]
        } else {
            end[i &- 1] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest)
        }
        end += count
    }

    /// "00" to "99", each two bytes.
    private static let digitPairs: StaticString =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899"
}

/// InfluxDB line protocol, written into a byte buffer. Every name and value is escaped per the
/// protocol's rules; viewer strings are hostile, so what no escape makes safe becomes `?`:
/// control characters (a newline ends the point) everywhere, and backslashes in measurement
/// names, tag keys and tag values (InfluxDB 1.x cannot unescape them, and one at the end of a
/// value escapes the separator after it). Lengths are bounded.
public enum LineProtocol {
    /// Longest tag value or string field written, in bytes; longer ones are cut.
    public static let maxValueBytes = 256

    /// Where a text goes, which decides what is escaped in it.
    enum Context {
        /// Measurement names: commas and spaces.
        case measurement
        /// Tag keys, tag values and field keys: commas, equals signs and spaces.
        case key
        /// String field values: double quotes (and backslashes, doubled).
        case stringField

        /// Whether `byte` is written other than as itself: control characters and
        /// backslashes everywhere, and the context's special bytes.
        @inline(__always)
        func needsWork(_ byte: UInt8) -> Bool {
            if byte >= 0x40 { return byte == UInt8(ascii: "\\") || byte == 0x7F }
            let controls: UInt64 = 0xFFFF_FFFF
            let special: UInt64
            switch self {
            case .measurement: special = 1 << 0x2C | 1 << 0x20  // , and space
            case .key: special = 1 << 0x2C | 1 << 0x3D | 1 << 0x20  // , = and space
            case .stringField: special = 1 << 0x22  // "
            }
            return (controls | special) >> UInt64(byte) & 1 != 0
        }
    }

    /// Appends a measurement name: commas and spaces escaped.
    public static func appendMeasurement(_ name: String, to out: inout [UInt8]) {
        appendEscaped(name, .measurement, to: &out)
    }

    /// Appends `,key=value` for a tag; an empty value (after cleaning) is left out, as the
    /// protocol does not allow it.
    public static func appendTag(_ key: String, _ value: String?, to out: inout [UInt8]) {
        guard var value, !value.isEmpty else { return }
        value.withUTF8 { appendTag(key, bytes: $0, to: &out) }
    }

    /// `appendTag` for a value given as UTF-8 bytes.
    static func appendTag(_ key: String, bytes value: UnsafeBufferPointer<UInt8>, to out: inout some LineOutput) {
        guard !value.isEmpty else { return }
        out.append(UInt8(ascii: ","))
        appendEscaped(key, .key, to: &out)
        out.append(UInt8(ascii: "="))
        appendEscaped(value, .key, to: &out)
    }

    // Names this program writes (measurements, tag and field keys) are constants that need no
    // escaping: written as they are, `,` or `=` included (`,cmcd_sid=`).

    @inline(__always)
    static func appendRaw(_ text: StaticString, to out: inout some LineOutput) {
        text.withUTF8Buffer { out.append(contentsOf: $0) }
    }

    /// A tag whose `,key=` is given whole; nothing when the value is empty.
    @inline(__always)
    static func appendTag(prefix commaKeyEquals: StaticString, bytes value: UnsafeBufferPointer<UInt8>, to out: inout some LineOutput) {
        guard !value.isEmpty else { return }
        appendRaw(commaKeyEquals, to: &out)
        appendEscaped(value, .key, to: &out)
    }

    @inline(__always)
    static func appendTag(prefix commaKeyEquals: StaticString, _ value: String?, to out: inout some LineOutput) {
        guard var value else { return }
        value.withUTF8 { appendTag(prefix: commaKeyEquals, bytes: $0, to: &out) }
    }

    static func appendEscaped(_ text: String, _ context: Context, to out: inout some LineOutput) {
        var text = text
        text.withUTF8 { appendEscaped($0, context, to: &out) }
    }

    /// Appends the escaped text: the context's special bytes get a backslash before them,
    /// control characters become `?`, and backslashes are doubled (in string fields, where
    /// InfluxDB unescapes them) or become `?` (elsewhere). Cut after `maxValueBytes` at a
    /// character boundary.
    static func appendEscaped(_ text: UnsafeBufferPointer<UInt8>, _ context: Context, to out: inout some LineOutput) {
        // The usual text (short, nothing to escape) is appended as it is.
        if text.count <= maxValueBytes, !mayNeedWork(text, context) {
            out.append(contentsOf: text)
            return
        }
        var written = 0
        for byte in text {
            if written >= maxValueBytes, byte & 0xC0 != 0x80 { break }  // cut at a character boundary
            written += 1
            if byte < 0x20 || byte == 0x7F {
                out.append(UInt8(ascii: "?"))
            } else if byte == UInt8(ascii: "\\") {
                if context == .stringField {
                    out.append(UInt8(ascii: "\\"))
                    out.append(UInt8(ascii: "\\"))
                } else {
                    out.append(UInt8(ascii: "?"))
                }
            } else {
                if context.needsWork(byte) { out.append(UInt8(ascii: "\\")) }
                out.append(byte)
            }
        }
    }

    /// Whether any byte of `text` may need work in `context`: sixteen bytes at a time,
    /// `ByteBlocks.stringStops` and `=` flag every byte any context escapes or replaces (and a
    /// few none does, such as `#`, `%` and non-ASCII bytes, which then take the exact path),
    /// the tail a byte at a time. Session ids are most of what is checked.
    @inline(__always)
    static func mayNeedWork(_ text: UnsafeBufferPointer<UInt8>, _ context: Context) -> Bool {
        guard let base = text.baseAddress else { return false }
        var i = 0
        while i + ByteBlocks.size <= text.count {
            if ByteBlocks.stringStops(base + i) | ByteBlocks.equal(base + i, UInt8(ascii: "=")) != 0 { return true }
            i += ByteBlocks.size
        }
        while i < text.count {
            if context.needsWork(base[i]) { return true }
            i += 1
        }
        return false
    }

    /// Appends an integer's decimal digits (as `String(value)` writes them).
    @inline(__always)
    static func appendDecimal(_ value: Int64, to out: inout some LineOutput) {
        out.appendDecimal(value)
    }

    /// A field set under construction: `key=value` pairs separated by commas.
    public struct Fields {
        var bytes: [UInt8] = []
        public var isEmpty: Bool { bytes.isEmpty }
        public init() {}

        public mutating func integer(_ key: String, _ value: Int64?) {
            guard let value else { return }
            LineProtocol.appendField(key, integer: value, to: &bytes)
        }

        public mutating func float(_ key: String, _ value: Double?) {
            guard let value else { return }
            LineProtocol.appendField(key, float: value, to: &bytes)
        }

        public mutating func bool(_ key: String, _ value: Bool?) {
            guard let value else { return }
            LineProtocol.appendField(key, bool: value, to: &bytes)
        }

        /// A string field: `"` and `\` escaped, control characters replaced, length bounded.
        public mutating func string(_ key: String, _ value: String?) {
            guard let value else { return }
            LineProtocol.appendField(key, string: value, to: &bytes)
        }
    }

    // The fields written straight into a point (`out` ends with the tags, a space, or a field).

    /// Starts a field: the comma unless it is the first, the key, `=`.
    static func appendFieldKey(_ key: String, to out: inout some LineOutput) {
        if let last = out.last, last != UInt8(ascii: " ") { out.append(UInt8(ascii: ",")) }
        appendEscaped(key, .key, to: &out)
        out.append(UInt8(ascii: "="))
    }

    /// A field of this program's whose `key=` is given whole.
    @inline(__always)
    static func appendFieldKey(prefix keyEquals: StaticString, to out: inout some LineOutput) {
        if let last = out.last, last != UInt8(ascii: " ") { out.append(UInt8(ascii: ",")) }
        appendRaw(keyEquals, to: &out)
    }

    @inline(__always)
    static func appendField(prefix keyEquals: StaticString, integer value: Int64?, to out: inout some LineOutput) {
        guard let value else { return }
        appendFieldKey(prefix: keyEquals, to: &out)
        appendDecimal(value, to: &out)
        out.append(UInt8(ascii: "i"))
    }

    @inline(__always)
    static func appendField(prefix keyEquals: StaticString, float value: Double?, to out: inout some LineOutput) {
        guard let value, value.isFinite else { return }
        appendFieldKey(prefix: keyEquals, to: &out)
        appendDouble(value, to: &out)
    }

    @inline(__always)
    static func appendField(prefix keyEquals: StaticString, bool value: Bool?, to out: inout some LineOutput) {
        guard let value else { return }
        appendFieldKey(prefix: keyEquals, to: &out)
        appendRaw(value ? "true" : "false", to: &out)
    }

    @inline(__always)
    static func appendField(prefix keyEquals: StaticString, string value: String?, to out: inout some LineOutput) {
        guard let value else { return }
        appendFieldKey(prefix: keyEquals, to: &out)
        appendQuoted(value, to: &out)
    }

    /// Appends a finite double as `JSONWriter.formatDouble` writes it; the usual values
    /// (whole numbers, and thousandths such as CloudFront's `time-taken`) without making a
    /// string.
    static func appendDouble(_ value: Double, to out: inout some LineOutput) {
        if value.magnitude < 1e9, value.magnitude >= 0.001 {
            let thousandths = (value * 1000).rounded()
            if thousandths / 1000 == value {
                let k = Int64(thousandths)
                let whole = k / 1000
                var fraction = (k % 1000).magnitude
                if value < 0, whole == 0 { out.append(UInt8(ascii: "-")) }
                appendDecimal(whole, to: &out)
                if fraction != 0 {
                    // One to three digits, trailing zeros dropped (shortest round trip).
                    out.append(UInt8(ascii: "."))
                    var digits = 3
                    while fraction % 10 == 0 {
                        fraction /= 10
                        digits -= 1
                    }
                    var divisor: UInt64 = 1
                    for _ in 1..<digits { divisor *= 10 }
                    while divisor > 0 {
                        out.append(UInt8(ascii: "0") + UInt8(truncatingIfNeeded: fraction / divisor % 10))
                        divisor /= 10
                    }
                }
                return
            }
        }
        var text = JSONWriter.formatDouble(value)
        text.withUTF8 { out.append(contentsOf: $0) }
    }

    static func appendField(_ key: String, integer value: Int64, to out: inout some LineOutput) {
        appendFieldKey(key, to: &out)
        appendDecimal(value, to: &out)
        out.append(UInt8(ascii: "i"))
    }

    static func appendField(_ key: String, float value: Double, to out: inout some LineOutput) {
        guard value.isFinite else { return }
        appendFieldKey(key, to: &out)
        appendDouble(value, to: &out)
    }

    static func appendField(_ key: String, bool value: Bool, to out: inout some LineOutput) {
        appendFieldKey(key, to: &out)
        appendRaw(value ? "true" : "false", to: &out)
    }

    static func appendField(_ key: String, string value: String, to out: inout some LineOutput) {
        appendFieldKey(key, to: &out)
        appendQuoted(value, to: &out)
    }

    /// A string field's value: quoted, `"` and `\` escaped, control characters replaced.
    static func appendQuoted(_ value: String, to out: inout some LineOutput) {
        out.append(UInt8(ascii: "\""))
        appendEscaped(value, .stringField, to: &out)
        out.append(UInt8(ascii: "\""))
    }

    /// Appends ` fields timestamp\n`, closing a point.
    public static func close(_ fields: Fields, timestampMs: Int64, to out: inout [UInt8]) {
        out.append(UInt8(ascii: " "))
        out.append(contentsOf: fields.bytes)
        closeFields(timestampMs: timestampMs, to: &out)
    }

    /// Appends ` timestamp\n` after fields written straight into `out`.
    static func closeFields(timestampMs: Int64, to out: inout some LineOutput) {
        out.append(UInt8(ascii: " "))
        appendDecimal(timestampMs, to: &out)
        out.append(UInt8(ascii: "\n"))
    }
}

/// The points CMCD Sentinel writes: the raw requests (`cloudfront_logs`, the old pipeline's
/// schema) and the findings (`cmcd_anomalies`). Timestamps are event time in milliseconds, so
/// a replay overwrites the same points instead of adding new ones.
public enum InfluxPoints {
    public static let rawMeasurement: StaticString = "cloudfront_logs"
    public static let anomalyMeasurement: StaticString = "cmcd_anomalies"
    public static let qoeMeasurement: StaticString = "cmcd_qoe"

    /// Appends one `cmcd_qoe` point for a cohort's closed window: tags are the cohort's
    /// dimensions, fields its series, the timestamp the window's start (so a replay
    /// overwrites it).
    public static func append(_ rollup: CohortRollup, to out: inout [UInt8]) {
        let w = rollup.window
        var fields = LineProtocol.Fields()
        fields.integer("sessions", Int64(w.sessions))
        fields.integer("requests", Int64(w.requests))
        fields.integer("sessions_started", Int64(w.sessionsStarted))
        fields.integer("stalled_sessions", Int64(w.stalledSessions))
        fields.integer("critical_drop_sessions", Int64(w.criticalDropSessions))
        fields.integer("stuck_startups", Int64(w.stuckStartupSessions))
        fields.integer("error_requests", Int64(w.errorRequests))
        fields.integer("watch_ms", w.watchedMs)
        fields.integer("stall_ms", w.stalledMs)
        for metric in CohortMetric.allCases { fields.float(metric.rawValue, w.value(of: metric)) }
        fields.float("average_bitrate_kbps", w.averageBitrateKbps)
        fields.float("average_throughput_kbps", w.averageThroughputKbps)
        LineProtocol.appendRaw(qoeMeasurement, to: &out)
        // The group's name, so that an edge's window and an edge-and-content one are apart.
        LineProtocol.appendTag("cohort", rollup.scope.map(\.dimension.rawValue).joined(separator: "+"), to: &out)
        for (dimension, value) in rollup.scope.sorted(by: { $0.dimension.rawValue < $1.dimension.rawValue }) {
            LineProtocol.appendTag(dimension.rawValue, value, to: &out)
        }
        LineProtocol.close(fields, timestampMs: w.start, to: &out)
    }

    /// Appends one `cloudfront_logs` point for a request, straight into `out` (the session id
    /// from the payload's bytes): a point costs no allocation.
    public static func append(_ sample: Sample, to out: inout [UInt8]) {
        appendRequest(sample, to: &out)
    }

    /// The most bytes a request's point takes: seven viewer values (six tags and `cmcd_sta`)
    /// of at most `LineProtocol.maxValueBytes` (and a character's last three bytes), each byte
    /// escaped into two at worst, plus the names and numbers, with room to spare.
    public static let maxRequestPointBytes = 8_192

    /// Writes a request's point from `start` on, over `maxRequestPointBytes` initialized bytes, and
    /// returns its length: the writer's path, without an array's checks on each append.
    public static func write(_ sample: Sample, at start: UnsafeMutablePointer<UInt8>) -> Int {
        var cursor = PointCursor(start)
        appendRequest(sample, to: &cursor)
        return cursor.count
    }

    static func appendRequest(_ sample: Sample, to out: inout some LineOutput) {
        let cmcd = sample.cmcd
        LineProtocol.appendRaw(rawMeasurement, to: &out)
        LineProtocol.appendTag(prefix: ",cmcd_cid=", sample.contentID, to: &out)
        LineProtocol.appendTag(prefix: ",cmcd_ot=", cmcd.objectType?.rawValue, to: &out)
        // The typed views give the spec's tokens only (the decoder ignores others), so that a
        // viewer cannot create series at will.
        LineProtocol.appendTag(prefix: ",cmcd_sf=", cmcd.streamingFormat, to: &out)
        sample.withSessionIDBytes { LineProtocol.appendTag(prefix: ",cmcd_sid=", bytes: $0, to: &out) }
        LineProtocol.appendTag(prefix: ",cmcd_st=", cmcd.streamType, to: &out)
        LineProtocol.appendTag(prefix: ",edge_location=", sample.edgeLocation, to: &out)
        out.append(UInt8(ascii: " "))
        // v2 lists carry one value per object type: the one for this request's type is written.
        LineProtocol.appendField(prefix: "cmcd_bl=", integer: sample.bufferLength, to: &out)
        LineProtocol.appendField(prefix: "cmcd_br=", integer: cmcd.encodedBitrate?.value(for: cmcd.objectType), to: &out)
        LineProtocol.appendField(prefix: "cmcd_tb=", integer: cmcd.topBitrate?.value(for: cmcd.objectType), to: &out)
        LineProtocol.appendField(prefix: "cmcd_mtp=", integer: cmcd.measuredThroughput?.value(for: cmcd.objectType), to: &out)
        LineProtocol.appendField(prefix: "cmcd_d=", integer: cmcd.objectDuration, to: &out)
        LineProtocol.appendField(prefix: "cmcd_dl=", integer: cmcd.deadline, to: &out)
        LineProtocol.appendField(prefix: "cmcd_rtp=", integer: cmcd.requestedMaxThroughput, to: &out)
        LineProtocol.appendField(prefix: "cmcd_msd=", integer: cmcd.mediaStartDelay, to: &out)
        LineProtocol.appendField(prefix: "cmcd_bsa=", integer: cmcd.starvationCount?.maximum, to: &out)
        LineProtocol.appendField(prefix: "cmcd_bsd=", integer: cmcd.starvationDuration?.maximum, to: &out)
        LineProtocol.appendField(prefix: "cmcd_pr=", float: cmcd.playbackRate, to: &out)
        LineProtocol.appendField(prefix: "cmcd_v=", integer: Int64(cmcd.version), to: &out)
        if cmcd.startup { LineProtocol.appendField(prefix: "cmcd_su=", bool: true, to: &out) }
        if cmcd.bufferStarvation { LineProtocol.appendField(prefix: "cmcd_bs=", bool: true, to: &out) }
        LineProtocol.appendField(prefix: "cmcd_sta=", string: cmcd.state?.rawValue, to: &out)
        LineProtocol.appendField(prefix: "time_taken=", float: sample.timeTaken, to: &out)
        LineProtocol.appendField(prefix: "sc_status=", integer: sample.httpStatus.map(Int64.init), to: &out)
        LineProtocol.closeFields(timestampMs: sample.time, to: &out)
    }

    /// Appends one `cmcd_anomalies` point for a finding, at its detection time.
    public static func append(_ finding: Finding, to out: inout [UInt8]) {
        var fields = LineProtocol.Fields()
        fields.string("id", finding.id)
        fields.string("summary", finding.summary)
        fields.integer("started_at_ms", finding.startedAt)
        for (key, value) in finding.details {
            switch value {
            case .int(let n): fields.integer(key, n)
            case .double(let d): fields.float(key, d)
            case .bool(let b): fields.bool(key, b)
            case .string(let s): fields.string(key, s)
            default: break
            }
        }
        if finding.type == .incident {
            // Open or not, for "open incidents" panels: the newest point per scope and rule says.
            fields.integer("open", finding.status == .firing ? 1 : 0)
        }
        LineProtocol.appendRaw(anomalyMeasurement, to: &out)
        LineProtocol.appendTag(prefix: ",cmcd_cid=", finding.contentID, to: &out)
        LineProtocol.appendTag(prefix: ",cmcd_sid=", finding.sessionID, to: &out)
        LineProtocol.appendTag(prefix: ",edge_location=", finding.edgeLocation, to: &out)
        if finding.type == .incident, case .string(let rule)? = finding.detail("rule") {
            // Incidents of two rules on one scope at one window's end stay two points.
            LineProtocol.appendTag(prefix: ",rule=", rule, to: &out)
        }
        if finding.type == .incident, case .object(let scope)? = finding.detail("scope") {
            // The incident's cohort (edge_location=FRA56-C2, or two dimensions): one series each.
            let text = scope.map { "\($0.key)=\($0.value.stringValue ?? JSONWriter.string($0.value))" }.joined(separator: " ")
            LineProtocol.appendTag(prefix: ",scope=", text, to: &out)
        }
        LineProtocol.appendTag(prefix: ",severity=", finding.severity.rawValue, to: &out)
        LineProtocol.appendTag(prefix: ",status=", finding.status.rawValue, to: &out)
        LineProtocol.appendTag(prefix: ",type=", finding.type.rawValue, to: &out)
        LineProtocol.close(fields, timestampMs: finding.detectedAt, to: &out)
    }
}
