/// The fields of a CloudFront real-time log record, in wire order.
///
/// CloudFront writes the selected fields in its own fixed order, so the list given here
/// must be that order, not the order of the `RealtimeLogConfig`.
public struct CloudFrontFields: Sendable, Hashable {
    /// The 10-field selection of the AWS CMCD sample this project replaces.
    public static let defaultNames = [
        "timestamp", "c-ip", "sc-status", "cs-method", "cs-uri-stem", "x-edge-location",
        "x-edge-request-id", "time-taken", "cs-uri-query", "cs-headers",
    ]

    /// CloudFront's native CMCD fields and the CMCD key each carries.
    public static let nativeCMCDFields: [String: String] = [
        "cmcd-encoded-bitrate": "br", "cmcd-buffer-length": "bl", "cmcd-buffer-starvation": "bs",
        "cmcd-content-id": "cid", "cmcd-object-duration": "d", "cmcd-deadline": "dl",
        "cmcd-measured-throughput": "mtp", "cmcd-next-object-request": "nor", "cmcd-next-range-request": "nrr",
        "cmcd-object-type": "ot", "cmcd-playback-rate": "pr", "cmcd-requested-maximum-throughput": "rtp",
        "cmcd-streaming-format": "sf", "cmcd-session-id": "sid", "cmcd-stream-type": "st",
        "cmcd-version": "v", "cmcd-top-bitrate": "tb", "cmcd-startup": "su",
    ]

    /// Every field name CloudFront real-time logs can select.
    public static let knownNames: Set<String> = Set(
        [
            "timestamp", "c-ip", "s-ip", "time-to-first-byte", "sc-status", "sc-bytes", "cs-method", "cs-protocol",
            "cs-host", "cs-uri-stem", "cs-bytes", "x-edge-location", "x-edge-request-id", "x-host-header",
            "time-taken", "cs-protocol-version", "c-ip-version", "cs-user-agent", "cs-referer", "cs-cookie",
            "cs-uri-query", "x-edge-response-result-type", "x-forwarded-for", "ssl-protocol", "ssl-cipher",
            "x-edge-result-type", "fle-encrypted-fields", "fle-status", "sc-content-type", "sc-content-len",
            "sc-range-start", "sc-range-end", "c-port", "x-edge-detailed-result-type", "c-country",
            "cs-accept-encoding", "cs-accept", "cache-behavior-path-pattern", "cs-headers", "cs-header-names",
            "cs-headers-count", "primary-distribution-id", "primary-distribution-dns-name", "origin-fbl",
            "origin-lbl", "asn", "timestamp(ms)", "sr-reason", "r-host", "x-edge-mqcs",
        ] + nativeCMCDFields.keys)

    public struct InvalidFieldList: Error, CustomStringConvertible, Sendable {
        public let reason: String
        public var description: String { reason }
    }

    public let names: [String]
    let timestamp: Int
    let timestampIsMilliseconds: Bool
    let edgeLocation: Int?
    let status: Int?
    let timeTaken: Int?
    let query: Int?
    let headers: Int?
    /// (field index, CMCD key) for the native `cmcd-*` fields selected.
    let native: [(index: Int, key: String)]

    public static let `default` = try! CloudFrontFields(CloudFrontFields.defaultNames)

    /// Validates a field list: known names, no duplicates, a timestamp, and a CMCD source.
    public init(_ names: [String]) throws(InvalidFieldList) {
        guard !names.isEmpty else { throw InvalidFieldList(reason: "the field list is empty") }
        var seen = Set<String>()
        for name in names {
            guard Self.knownNames.contains(name) else {
                throw InvalidFieldList(reason: "unknown CloudFront field '\(name.prefix(64))'")
            }
            guard seen.insert(name).inserted else { throw InvalidFieldList(reason: "field '\(name)' is listed twice") }
        }
        func index(_ name: String) -> Int? { names.firstIndex(of: name) }
        if let t = index("timestamp") {
            timestamp = t
            timestampIsMilliseconds = false
        } else if let t = index("timestamp(ms)") {
            timestamp = t
            timestampIsMilliseconds = true
        } else {
            throw InvalidFieldList(reason: "the field list has no 'timestamp' field")
        }
        edgeLocation = index("x-edge-location")
        status = index("sc-status")
        timeTaken = index("time-taken")
        query = index("cs-uri-query")
        headers = index("cs-headers")
        native = names.enumerated().compactMap { i, name in Self.nativeCMCDFields[name].map { (i, $0) } }
        guard query != nil || headers != nil || !native.isEmpty else {
            throw InvalidFieldList(reason: "the field list carries no CMCD: select cs-uri-query, cs-headers or cmcd-* fields")
        }
        self.names = names
    }

    public static func == (lhs: CloudFrontFields, rhs: CloudFrontFields) -> Bool { lhs.names == rhs.names }
    public func hash(into hasher: inout Hasher) { hasher.combine(names) }
}
