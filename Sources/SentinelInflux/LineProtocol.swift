import CMCD
import CMCDDetection
import CMCDRecords
import SentinelJSON

/// InfluxDB line protocol, written into a byte buffer. Every name and value is escaped per the
/// protocol's rules; viewer strings are hostile, so what no escape makes safe becomes `?`:
/// control characters (a newline ends the point) everywhere, and backslashes in measurement
/// names, tag keys and tag values (InfluxDB 1.x cannot unescape them, and one at the end of a
/// value escapes the separator after it). Lengths are bounded.
public enum LineProtocol {
    /// Longest tag value or string field written, in bytes; longer ones are cut.
    public static let maxValueBytes = 256

    /// Appends a measurement name: commas and spaces escaped.
    public static func appendMeasurement(_ name: String, to out: inout [UInt8]) {
        appendEscaped(name, escaping: [UInt8(ascii: ","), UInt8(ascii: " ")], backslash: false, to: &out)
    }

    /// Appends `,key=value` for a tag; an empty value (after cleaning) is left out, as the
    /// protocol does not allow it.
    public static func appendTag(_ key: String, _ value: String?, to out: inout [UInt8]) {
        guard let value, !value.isEmpty else { return }
        let escapes: [UInt8] = [UInt8(ascii: ","), UInt8(ascii: "="), UInt8(ascii: " ")]
        out.append(UInt8(ascii: ","))
        appendEscaped(key, escaping: escapes, backslash: false, to: &out)
        out.append(UInt8(ascii: "="))
        appendEscaped(value, escaping: escapes, backslash: false, to: &out)
    }

    /// Appends the escaped text: the `escaping` bytes get a backslash before them, control
    /// characters become `?`, and backslashes are doubled (`backslash`, in string fields, where
    /// InfluxDB unescapes them) or become `?` (elsewhere).
    static func appendEscaped(_ text: String, escaping: [UInt8], backslash: Bool, to out: inout [UInt8]) {
        var written = 0
        for byte in text.utf8 {
            if written >= maxValueBytes, byte & 0xC0 != 0x80 { break }  // cut at a character boundary
            written += 1
            if byte < 0x20 || byte == 0x7F {
                out.append(UInt8(ascii: "?"))
            } else if byte == UInt8(ascii: "\\") {
                out.append(contentsOf: backslash ? [UInt8(ascii: "\\"), UInt8(ascii: "\\")] : [UInt8(ascii: "?")])
            } else {
                if escaping.contains(byte) { out.append(UInt8(ascii: "\\")) }
                out.append(byte)
            }
        }
    }

    /// A field set under construction: `key=value` pairs separated by commas.
    public struct Fields {
        var bytes: [UInt8] = []
        public var isEmpty: Bool { bytes.isEmpty }
        public init() {}

        mutating func key(_ key: String) {
            if !bytes.isEmpty { bytes.append(UInt8(ascii: ",")) }
            LineProtocol.appendEscaped(key, escaping: [UInt8(ascii: ","), UInt8(ascii: "="), UInt8(ascii: " ")], backslash: false, to: &bytes)
            bytes.append(UInt8(ascii: "="))
        }

        public mutating func integer(_ key: String, _ value: Int64?) {
            guard let value else { return }
            self.key(key)
            bytes.append(contentsOf: String(value).utf8)
            bytes.append(UInt8(ascii: "i"))
        }

        public mutating func float(_ key: String, _ value: Double?) {
            guard let value, value.isFinite else { return }
            self.key(key)
            bytes.append(contentsOf: JSONWriter.formatDouble(value).utf8)
        }

        public mutating func bool(_ key: String, _ value: Bool?) {
            guard let value else { return }
            self.key(key)
            bytes.append(contentsOf: (value ? "true" : "false").utf8)
        }

        /// A string field: `"` and `\` escaped, control characters replaced, length bounded.
        public mutating func string(_ key: String, _ value: String?) {
            guard let value else { return }
            self.key(key)
            bytes.append(UInt8(ascii: "\""))
            LineProtocol.appendEscaped(value, escaping: [UInt8(ascii: "\"")], backslash: true, to: &bytes)
            bytes.append(UInt8(ascii: "\""))
        }
    }

    /// Appends ` fields timestamp\n`, closing a point (nothing when there are no fields).
    public static func close(_ fields: Fields, timestampMs: Int64, to out: inout [UInt8]) {
        out.append(UInt8(ascii: " "))
        out.append(contentsOf: fields.bytes)
        out.append(UInt8(ascii: " "))
        out.append(contentsOf: String(timestampMs).utf8)
        out.append(UInt8(ascii: "\n"))
    }
}

/// The points CMCD Sentinel writes: the raw requests (`cloudfront_logs`, the old pipeline's
/// schema) and the findings (`cmcd_anomalies`). Timestamps are event time in milliseconds, so
/// a replay overwrites the same points instead of adding new ones.
public enum InfluxPoints {
    public static let rawMeasurement = "cloudfront_logs"
    public static let anomalyMeasurement = "cmcd_anomalies"

    /// Streaming formats and stream types tagged as such: the spec's tokens only (the decoder
    /// ignores others; checked again here), so that a viewer cannot create series at will.
    static let streamingFormats = CMCDKeys.allowedTokens(for: "sf") ?? []
    static let streamTypes = CMCDKeys.allowedTokens(for: "st") ?? []

    /// Appends one `cloudfront_logs` point for a request.
    public static func append(_ sample: Sample, to out: inout [UInt8]) {
        let cmcd = sample.cmcd
        var fields = LineProtocol.Fields()
        // v2 lists carry one value per object type: the one for this request's type is written.
        fields.integer("cmcd_bl", sample.bufferLength)
        fields.integer("cmcd_br", cmcd.encodedBitrate?.value(for: cmcd.objectType))
        fields.integer("cmcd_tb", cmcd.topBitrate?.value(for: cmcd.objectType))
        fields.integer("cmcd_mtp", cmcd.measuredThroughput?.value(for: cmcd.objectType))
        fields.integer("cmcd_d", cmcd.objectDuration)
        fields.integer("cmcd_dl", cmcd.deadline)
        fields.integer("cmcd_rtp", cmcd.requestedMaxThroughput)
        fields.integer("cmcd_msd", cmcd.mediaStartDelay)
        fields.integer("cmcd_bsa", cmcd.starvationCount?.maximum)
        fields.integer("cmcd_bsd", cmcd.starvationDuration?.maximum)
        fields.float("cmcd_pr", cmcd.playbackRate)
        fields.integer("cmcd_v", Int64(cmcd.version))
        if cmcd.startup { fields.bool("cmcd_su", true) }
        if cmcd.bufferStarvation { fields.bool("cmcd_bs", true) }
        fields.string("cmcd_sta", cmcd.state?.rawValue)
        fields.float("time_taken", sample.timeTaken)
        fields.integer("sc_status", sample.httpStatus.map(Int64.init))

        LineProtocol.appendMeasurement(rawMeasurement, to: &out)
        LineProtocol.appendTag("cmcd_cid", sample.contentID, to: &out)
        LineProtocol.appendTag("cmcd_ot", cmcd.objectType?.rawValue, to: &out)
        LineProtocol.appendTag("cmcd_sf", cmcd.streamingFormat.flatMap { streamingFormats.contains($0) ? $0 : nil }, to: &out)
        LineProtocol.appendTag("cmcd_sid", sample.sessionID, to: &out)
        LineProtocol.appendTag("cmcd_st", cmcd.streamType.flatMap { streamTypes.contains($0) ? $0 : nil }, to: &out)
        LineProtocol.appendTag("edge_location", sample.edgeLocation, to: &out)
        LineProtocol.close(fields, timestampMs: sample.time, to: &out)
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
        LineProtocol.appendMeasurement(anomalyMeasurement, to: &out)
        LineProtocol.appendTag("cmcd_cid", finding.contentID, to: &out)
        LineProtocol.appendTag("cmcd_sid", finding.sessionID, to: &out)
        LineProtocol.appendTag("edge_location", finding.edgeLocation, to: &out)
        LineProtocol.appendTag("severity", finding.severity.rawValue, to: &out)
        LineProtocol.appendTag("status", finding.status.rawValue, to: &out)
        LineProtocol.appendTag("type", finding.type.rawValue, to: &out)
        LineProtocol.close(fields, timestampMs: finding.detectedAt, to: &out)
    }
}
