import CMCD

/// What a collector does with one report: the Kafka record it becomes, or why not.
///
/// Pure: a report is decoded leniently (a bad member is left out, as on the record path),
/// must name its session, and becomes one `cmcd` record line (`run --format cmcd` reads it)
/// with `ts` set to the receiving time when the player sent none, keyed by session id.
public enum CollectorReports {
    /// One Kafka record: key and value.
    public struct Record: Sendable, Equatable {
        public var key: String
        public var line: String
    }

    /// A report the collector could not use, and why (line numbers count from 1).
    public struct Rejection: Error, Sendable, Equatable, CustomStringConvertible {
        public var line: Int
        public var reason: String
        public var description: String { "line \(line): \(reason)" }
    }

    /// Longest report line taken, in bytes.
    public static let maxReportBytes = 16 * 1024

    /// Event-mode body (CTA-5004-B): one report per LF-separated line, surrounding spaces
    /// ignored, blank lines skipped.
    public static func fromBody(_ body: [UInt8], receivedAt now: Int64, maxReports: Int) -> (records: [Record], rejected: [Rejection]) {
        var records: [Record] = []
        var rejected: [Rejection] = []
        var lineNumber = 0
        for raw in body.split(separator: 0x0A, omittingEmptySubsequences: false) {
            lineNumber += 1
            var line = raw[...]
            while let last = line.last, last == 0x0D || last == 0x20 || last == 0x09 { line.removeLast() }
            while let first = line.first, first == 0x20 || first == 0x09 { line.removeFirst() }
            if line.isEmpty { continue }
            guard records.count + rejected.count < maxReports else {
                rejected.append(Rejection(line: lineNumber, reason: "more than \(maxReports) reports in one batch"))
                break
            }
            guard line.count <= maxReportBytes else {
                rejected.append(Rejection(line: lineNumber, reason: "report of \(line.count) bytes exceeds \(maxReportBytes)"))
                continue
            }
            let outcome = line.withUnsafeBufferPointer { bytes in
                Result { () throws(CMCDDecodingError) in try CMCDPayload(rawBytes: bytes) }
            }
            switch outcome {
            case .success(let payload):
                switch record(payload, receivedAt: now) {
                case .success(let record): records.append(record)
                case .failure(let why): rejected.append(Rejection(line: lineNumber, reason: why.reason))  // numbered here
                }
            case .failure(let error):
                rejected.append(Rejection(line: lineNumber, reason: error.description))
            }
        }
        return (records, rejected)
    }

    /// Request-mode data sent to the collector itself: the `CMCD-*` headers, else the
    /// `CMCD=` query argument. nil when the request carries neither.
    public static func fromRequest(
        query: String?, headers: [(name: String, value: String)], receivedAt now: Int64
    ) -> Result<Record, Rejection>? {
        do throws(CMCDDecodingError) {
            if let payload = try CMCDDecoder.decodeHeaders(headers) { return record(payload, receivedAt: now) }
            if let query, query.contains("CMCD=") {
                return record(try CMCDDecoder.decodeQuery(query, allowBareValue: false), receivedAt: now)
            }
        } catch {
            return .failure(Rejection(line: 1, reason: error.description))
        }
        return nil
    }

    static func record(_ payload: CMCDPayload, receivedAt now: Int64) -> Result<Record, Rejection> {
        guard let sid = payload.sessionID, !sid.isEmpty else { return .failure(Rejection(line: 1, reason: "no session id (sid)")) }
        var line = payload.dictionaryText
        // Event reports carry ts; request-mode data is stamped on arrival.
        if payload.timestamp == nil { line += (line.isEmpty ? "" : ",") + "ts=\(now)" }
        return .success(Record(key: sid, line: line))
    }
}

/// A token bucket: at most `rate` units a second on average, `burst` at once. Pure: the
/// caller passes the time.
public struct TokenBucket: Sendable {
    public let rate: Double
    public let burst: Double
    private var tokens: Double
    private var last: Double?

    public init(rate: Double, burst: Double) {
        self.rate = rate
        self.burst = burst
        tokens = burst
    }

    /// Takes `n` units if there are that many; false (taking none) otherwise.
    public mutating func take(_ n: Int, at now: Double) -> Bool {
        if let last { tokens = min(burst, tokens + max(now - last, 0) * rate) }
        last = now
        guard Double(n) <= tokens else { return false }
        tokens -= Double(n)
        return true
    }
}
