import CMCD

/// One normalised CMCD observation: a request (or event report) of one playback session at
/// one moment of event time. Produced by `RecordParser`, consumed by the detectors and sinks.
public struct Sample: Sendable, Hashable {
    /// Event time in milliseconds since the Unix epoch, taken from the record.
    public var time: Int64
    /// The playback session (`sid`). Unless set explicitly it is read from `cmcd` when asked
    /// for, so that a sample costs no string of its own on the hot path.
    public var sessionID: String {
        get { storedSessionID ?? cmcd.sessionID ?? "" }
        set { storedSessionID = newValue }
    }
    private var storedSessionID: String?
    public var contentID: String?
    /// CloudFront edge location (`x-edge-location`), when the record has one.
    public var edgeLocation: String?
    /// HTTP status of the request, when the record has one.
    public var httpStatus: Int?
    /// Request duration in seconds (`time-taken`), when the record has one.
    public var timeTaken: Double?
    /// The whole decoded CMCD payload.
    public var cmcd: CMCDPayload
    /// Where the record came from in its stream (the Kafka offset), or 0 when unknown. The
    /// detection engine reports the oldest position its state still needs, so the daemon
    /// never commits past a record it would need after a crash.
    public var position: Int64 = 0

    /// Calls `body` with the session id's UTF-8 bytes (no `String` is made for them).
    public func withSessionIDBytes(_ body: (UnsafeBufferPointer<UInt8>) -> Void) {
        if var id = storedSessionID {
            id.withUTF8(body)
        } else if !cmcd.withSessionIDBytes(body) {
            body(UnsafeBufferPointer(start: nil, count: 0))
        }
    }

    public static func == (a: Sample, b: Sample) -> Bool {
        a.time == b.time && a.sessionID == b.sessionID && a.contentID == b.contentID && a.edgeLocation == b.edgeLocation
            && a.httpStatus == b.httpStatus && a.timeTaken == b.timeTaken && a.cmcd == b.cmcd && a.position == b.position
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(time)
        hasher.combine(sessionID)
        hasher.combine(cmcd)
        hasher.combine(position)
    }

    public var objectType: CMCDObjectType? { cmcd.objectType }

    /// Buffer length (ms) for this request's object type.
    public var bufferLength: Int64? { cmcd.bufferLength?.value(for: cmcd.objectType) }
}

extension Sample {
    // The initialisers live here so that the memberwise one is still made: building a sample
    // through it is one aggregate, where assigning field by field leaves a copy behind.

    public init(
        time: Int64, sessionID: String, contentID: String? = nil, edgeLocation: String? = nil,
        httpStatus: Int? = nil, timeTaken: Double? = nil, cmcd: CMCDPayload
    ) {
        self.init(
            time: time, storedSessionID: sessionID, contentID: contentID, edgeLocation: edgeLocation, httpStatus: httpStatus,
            timeTaken: timeTaken, cmcd: cmcd)
    }

    /// A sample whose session id is the payload's (`cmcd.hasSessionID` must hold).
    init(time: Int64, contentID: String?, edgeLocation: String? = nil, httpStatus: Int? = nil, timeTaken: Double? = nil, cmcd: CMCDPayload) {
        self.init(
            time: time, storedSessionID: nil, contentID: contentID, edgeLocation: edgeLocation, httpStatus: httpStatus,
            timeTaken: timeTaken, cmcd: cmcd)
    }
}
