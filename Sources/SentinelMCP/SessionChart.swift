import Foundation
import SentinelAlerts
import SentinelJSON

/// A session as a picture: buffer length (left axis, seconds), encoded bitrate and measured
/// throughput (right axis, Mbps) over time, each finding a shaded band from its start to its
/// end (or the last request) labelled with its type. SVG from a small writer of our own (every
/// text from a viewer is escaped, sizes are fixed, points are bounded), PNG through librsvg.
public struct SessionChart: Sendable {
    public struct Point: Sendable, Equatable {
        public var time: Int64
        public var bufferMs: Double?
        public var bitrateKbps: Double?
        public var throughputKbps: Double?

        public init(time: Int64, bufferMs: Double?, bitrateKbps: Double?, throughputKbps: Double?) {
            self.time = time
            self.bufferMs = bufferMs
            self.bitrateKbps = bitrateKbps
            self.throughputKbps = throughputKbps
        }
    }

    public struct Mark: Sendable, Equatable {
        public var type: String
        public var severity: String
        public var start: Int64
        public var end: Int64?

        public init(type: String, severity: String, start: Int64, end: Int64?) {
            self.type = type
            self.severity = severity
            self.start = start
            self.end = end
        }
    }

    public var sessionID: String
    public var points: [Point]
    public var marks: [Mark]

    public init(sessionID: String, points: [Point], marks: [Mark]) {
        self.sessionID = sessionID
        self.points = points
        self.marks = marks
    }

    static let width = 800.0, height = 320.0
    static let left = 56.0, right = 64.0, top = 36.0, bottom = 40.0

    /// The chart as an SVG document.
    public var svg: String {
        var out = SVGWriter(width: Self.width, height: Self.height)
        out.text(x: Self.left, y: 20, "Session \(sessionID)", size: 14, weight: "bold")
        let plotWidth = Self.width - Self.left - Self.right
        let plotHeight = Self.height - Self.top - Self.bottom
        guard let first = points.first?.time, let last = points.last?.time else {
            out.text(x: Self.left, y: Self.top + plotHeight / 2, "No requests of this session in the range.", size: 13)
            return out.document
        }
        let span = Double(max(last - first, 1))
        func x(_ t: Int64) -> Double { Self.left + Double(min(max(t, first), last) - first) / span * plotWidth }
        let maxBuffer = max(points.compactMap(\.bufferMs).max() ?? 0, 1_000)
        let maxRate = max(points.flatMap { [$0.bitrateKbps, $0.throughputKbps].compactMap { $0 } }.max() ?? 0, 1_000)
        func yBuffer(_ ms: Double) -> Double { Self.top + plotHeight - ms / maxBuffer * plotHeight }
        func yRate(_ kbps: Double) -> Double { Self.top + plotHeight - kbps / maxRate * plotHeight }

        // Findings first, under the lines.
        for mark in marks {
            let x0 = x(mark.start), x1 = max(x(mark.end ?? last), x0 + 2)
            out.rect(x: x0, y: Self.top, width: x1 - x0, height: plotHeight, fill: mark.severity == "critical" ? "#f8d0d0" : "#fbe8c0")
            out.text(x: x0 + 2, y: Self.top + 12, mark.type, size: 10, fill: "#7a1f1f")
        }
        out.rect(x: Self.left, y: Self.top, width: plotWidth, height: plotHeight, fill: "none", stroke: "#888")
        out.polyline(points.compactMap { p in p.bufferMs.map { (x(p.time), yBuffer($0)) } }, stroke: "#1f5fbf", width: 2)
        out.polyline(points.compactMap { p in p.bitrateKbps.map { (x(p.time), yRate($0)) } }, stroke: "#2e8b3e", width: 1.5)
        out.polyline(points.compactMap { p in p.throughputKbps.map { (x(p.time), yRate($0)) } }, stroke: "#b5651d", width: 1, dash: "4 3")

        // Axes: buffer in seconds on the left, rates in Mbps on the right, time below.
        for i in 0...4 {
            let fraction = Double(i) / 4
            let y = Self.top + plotHeight - fraction * plotHeight
            out.text(x: Self.left - 6, y: y + 4, Self.format(maxBuffer * fraction / 1_000) + " s", size: 10, anchor: "end")
            out.text(x: Self.width - Self.right + 6, y: y + 4, Self.format(maxRate * fraction / 1_000) + " Mbps", size: 10)
        }
        out.text(x: Self.left, y: Self.height - 20, RFC3339.format(milliseconds: first), size: 10)
        out.text(x: Self.width - Self.right, y: Self.height - 20, RFC3339.format(milliseconds: last), size: 10, anchor: "end")
        out.text(x: Self.left, y: Self.height - 6, "buffer length (blue), encoded bitrate (green), measured throughput (brown, dashed); shaded: findings", size: 10)
        return out.document
    }

    static func format(_ value: Double) -> String {
        value >= 10 ? String(Int(value.rounded())) : String((value * 10).rounded() / 10)
    }
}

/// Just enough SVG: rectangles, polylines and text, numbers with two decimals, text escaped.
struct SVGWriter {
    private var body = ""
    let width: Double
    let height: Double

    init(width: Double, height: Double) {
        self.width = width
        self.height = height
    }

    var document: String {
        """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Self.n(width))" height="\(Self.n(height))" viewBox="0 0 \(Self.n(width)) \(Self.n(height))" \
        font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>\(body)</svg>

        """
    }

    mutating func rect(x: Double, y: Double, width: Double, height: Double, fill: String, stroke: String? = nil) {
        body += "<rect x=\"\(Self.n(x))\" y=\"\(Self.n(y))\" width=\"\(Self.n(width))\" height=\"\(Self.n(height))\" fill=\"\(fill)\""
        if let stroke { body += " stroke=\"\(stroke)\"" }
        body += "/>"
    }

    mutating func polyline(_ points: [(Double, Double)], stroke: String, width: Double, dash: String? = nil) {
        guard points.count > 1 else { return }
        body += "<polyline fill=\"none\" stroke=\"\(stroke)\" stroke-width=\"\(Self.n(width))\""
        if let dash { body += " stroke-dasharray=\"\(dash)\"" }
        body += " points=\"" + points.map { "\(Self.n($0.0)),\(Self.n($0.1))" }.joined(separator: " ") + "\"/>"
    }

    mutating func text(x: Double, y: Double, _ text: String, size: Double, weight: String? = nil, anchor: String? = nil, fill: String = "#222") {
        body += "<text x=\"\(Self.n(x))\" y=\"\(Self.n(y))\" font-size=\"\(Self.n(size))\" fill=\"\(fill)\""
        if let weight { body += " font-weight=\"\(weight)\"" }
        if let anchor { body += " text-anchor=\"\(anchor)\"" }
        body += ">" + Self.escape(String(text.prefix(200))) + "</text>"
    }

    static func n(_ value: Double) -> String {
        let rounded = (value * 100).rounded() / 100
        return rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
    }

    /// XML text: markup characters escaped, control characters dropped.
    static func escape(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: if scalar.value >= 0x20, scalar.value != 0x7F { out.unicodeScalars.append(scalar) }
            }
        }
        return out
    }
}

extension SentinelTools {
    /// Most requests one chart draws (the first ones of the range).
    static let chartPoints = 2_000

    /// The session's chart from its stored requests and its findings.
    func sessionChart(sid: String, range: TimeRange) async throws -> SessionChart {
        let rows = try await requireInflux().query(
            "SELECT cmcd_bl, cmcd_br, cmcd_mtp, cmcd_ot FROM cloudfront_logs WHERE time > now() - \(range.literal) AND cmcd_sid = $sid ORDER BY time LIMIT \(Self.chartPoints)",
            params: ["sid": sid])
        let points = (rows.first?.records ?? []).compactMap { r -> SessionChart.Point? in
            guard let time = Self.int(r["time"]) else { return nil }
            // The bitrate of media segments only (a manifest's or init segment's `br` is not what plays).
            let media = ["v", "a", "av"].contains(Self.str(r["cmcd_ot"]) ?? "v")
            return SessionChart.Point(
                time: time, bufferMs: Self.double(r["cmcd_bl"]), bitrateKbps: media ? Self.double(r["cmcd_br"]) : nil, throughputKbps: Self.double(r["cmcd_mtp"]))
        }
        var marks: [SessionChart.Mark] = []
        if let store {
            let since = AlertStore.nowMs() - range.milliseconds
            marks = try await store.alerts(since: since, sessionID: sid, limit: 200).map {
                SessionChart.Mark(type: $0.type, severity: $0.severity, start: $0.startedAt, end: $0.resolvedAt)
            }
        }
        return SessionChart(sessionID: sid, points: points, marks: marks)
    }

    func chart(_ input: ToolInput) async throws -> (String, JSONValue) {
        guard let sid = try input.string("cmcd_sid") ?? input.string("session_id"), !sid.isEmpty else { throw BadArgument("cmcd_sid is required") }
        let range = try input.timeRange(default: "-24h")
        let chart = try await sessionChart(sid: sid, range: range)
        let uri = "cmcd://sessions/\(sid.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? sid)/chart.svg"
        let svg = chart.svg
        let png = chart.points.isEmpty ? nil : PNGRasteriser.png(svg: svg, width: Int(SessionChart.width), height: Int(SessionChart.height))
        let formats =
            png != nil ? "PNG and SVG" : "SVG only: no PNG, \(PNGRasteriser.isAvailable ? "the rasteriser refused it" : "librsvg and cairo are not installed here")"
        return (
            "Session \(sid): \(chart.points.count) requests and \(chart.marks.count) findings drawn (\(formats)). Also at \(uri).",
            .object([
                ("status", .string(chart.points.isEmpty ? "not_found" : "success")), ("cmcd_sid", .string(sid)), ("time_range", .string(range.text)),
                ("points", .int(Int64(chart.points.count))), ("findings", .int(Int64(chart.marks.count))),
                ("truncated", .bool(chart.points.count >= Self.chartPoints)), ("svg_uri", .string(uri)), ("mime_type", .string("image/svg+xml")),
                ("png", png.map { .string($0.base64EncodedString()) } ?? .null), ("svg", .string(svg)),
            ])
        )
    }
}
