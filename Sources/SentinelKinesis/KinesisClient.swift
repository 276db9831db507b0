import AsyncHTTPClient
import Foundation
import SentinelJSON

/// The Kinesis Data Streams calls a consumer and a replayer need, over the JSON 1.1 protocol.
/// Throttling (`ProvisionedThroughputExceededException` and kin) is retried with backoff by
/// the service; an expired shard iterator is thrown (`isExpiredIterator`) for the caller to
/// renew from its last sequence number.
public struct KinesisClient: Sendable {
    public let service: AWSJSONService

    /// `endpoint`: nil for AWS's own in `region`.
    public init(region: String, endpoint: String? = nil, credentials: AWSCredentialChain, http: HTTPClient) throws {
        service = try AWSJSONService(
            endpoint: endpoint ?? "https://kinesis.\(region).amazonaws.com", region: region, service: "kinesis",
            targetPrefix: "Kinesis_20131202", jsonVersion: "1.1", credentials: credentials, http: http)
    }

    /// The region to use when none is configured: `AWS_REGION`, `AWS_DEFAULT_REGION`, else
    /// us-east-1, as the AWS SDKs choose.
    public static func defaultRegion(_ environment: [String: String]) -> String {
        environment["AWS_REGION"] ?? environment["AWS_DEFAULT_REGION"] ?? "us-east-1"
    }

    /// A client over an already configured service (its retries, say).
    public init(service: AWSJSONService) { self.service = service }

    /// One shard as `ListShards` describes it.
    public struct Shard: Sendable, Equatable {
        public var id: String
        public var parent: String?
        public var adjacentParent: String?
        /// Set once the shard is closed (split or merged): no record comes after it.
        public var endingSequenceNumber: String?
        public var isOpen: Bool { endingSequenceNumber == nil }
        /// The shards whose records come before this one's.
        public var parents: [String] { [parent, adjacentParent].compactMap { $0 } }

        public init(id: String, parent: String? = nil, adjacentParent: String? = nil, endingSequenceNumber: String? = nil) {
            self.id = id
            self.parent = parent
            self.adjacentParent = adjacentParent
            self.endingSequenceNumber = endingSequenceNumber
        }
    }

    public struct Record: Sendable {
        public var sequenceNumber: String
        public var partitionKey: String
        public var data: [UInt8]
        /// When Kinesis received it (ms since the epoch).
        public var arrivalMs: Int64?
    }

    public struct RecordsPage: Sendable {
        public var records: [Record]
        /// Nil once a closed shard has been read to its end.
        public var nextIterator: String?
        /// How far the iterator is behind the shard's newest record.
        public var millisBehindLatest: Int64?
    }

    /// Where a shard iterator starts.
    public enum StartingPosition: Sendable, Equatable {
        case trimHorizon
        case latest
        case afterSequenceNumber(String)
        case atSequenceNumber(String)
    }

    public struct StreamSummary: Sendable, Equatable {
        public var status: String
        public var openShardCount: Int
    }

    public func createStream(_ stream: String, shardCount: Int) async throws {
        _ = try await service.call("CreateStream", .object([("StreamName", .string(stream)), ("ShardCount", .int(Int64(shardCount)))]))
    }

    public func describeStreamSummary(_ stream: String) async throws -> StreamSummary {
        let answer = try await service.call("DescribeStreamSummary", .object([("StreamName", .string(stream))]))
        let summary = answer["StreamDescriptionSummary"]
        return StreamSummary(status: summary?["StreamStatus"]?.stringValue ?? "", openShardCount: Int(summary?["OpenShardCount"]?.intValue ?? 0))
    }

    /// Waits until the stream is `ACTIVE` (after creating or resharding it), at most `timeoutSeconds`.
    public func waitUntilActive(_ stream: String, timeoutSeconds: Double = 60) async throws {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while try await describeStreamSummary(stream).status != "ACTIVE" {
            guard Date() < deadline else { throw AWSError(type: "Timeout", message: "stream \(stream) did not become ACTIVE", status: nil) }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// Every shard of the stream, open and closed (following `NextToken`).
    public func listShards(_ stream: String) async throws -> [Shard] {
        var shards: [Shard] = []
        var input: JSONValue = .object([("StreamName", .string(stream))])
        while true {
            let answer = try await service.call("ListShards", input)
            for case let shard in answer["Shards"]?.arrayValue ?? [] {
                guard let id = shard["ShardId"]?.stringValue else { continue }
                shards.append(
                    Shard(
                        id: id, parent: shard["ParentShardId"]?.stringValue, adjacentParent: shard["AdjacentParentShardId"]?.stringValue,
                        endingSequenceNumber: shard["SequenceNumberRange"]?["EndingSequenceNumber"]?.stringValue))
            }
            guard let next = answer["NextToken"]?.stringValue, !next.isEmpty else { return shards }
            input = .object([("NextToken", .string(next))])
        }
    }

    public func shardIterator(_ stream: String, shard: String, from position: StartingPosition) async throws -> String {
        var input: [(key: String, value: JSONValue)] = [("StreamName", .string(stream)), ("ShardId", .string(shard))]
        switch position {
        case .trimHorizon: input.append(("ShardIteratorType", .string("TRIM_HORIZON")))
        case .latest: input.append(("ShardIteratorType", .string("LATEST")))
        case .afterSequenceNumber(let n): input += [("ShardIteratorType", .string("AFTER_SEQUENCE_NUMBER")), ("StartingSequenceNumber", .string(n))]
        case .atSequenceNumber(let n): input += [("ShardIteratorType", .string("AT_SEQUENCE_NUMBER")), ("StartingSequenceNumber", .string(n))]
        }
        let answer = try await service.call("GetShardIterator", .object(input))
        guard let iterator = answer["ShardIterator"]?.stringValue else {
            throw AWSError(type: "BadAnswer", message: "GetShardIterator gave no iterator for \(shard)", status: nil)
        }
        return iterator
    }

    /// Up to `limit` records (at most 10,000) from `iterator`.
    public func records(_ iterator: String, limit: Int = 10_000) async throws -> RecordsPage {
        let answer = try await service.call("GetRecords", .object([("ShardIterator", .string(iterator)), ("Limit", .int(Int64(min(max(limit, 1), 10_000))))]))
        var records: [Record] = []
        for record in answer["Records"]?.arrayValue ?? [] {
            guard let sequence = record["SequenceNumber"]?.stringValue, let data = record["Data"]?.stringValue.flatMap({ Data(base64Encoded: $0) }) else {
                continue
            }
            let arrival = record["ApproximateArrivalTimestamp"].flatMap { value -> Int64? in
                switch value {
                case .double(let seconds): return Int64(seconds * 1000)
                case .int(let seconds): return seconds * 1000
                default: return nil
                }
            }
            records.append(Record(sequenceNumber: sequence, partitionKey: record["PartitionKey"]?.stringValue ?? "", data: Array(data), arrivalMs: arrival))
        }
        return RecordsPage(records: records, nextIterator: answer["NextShardIterator"]?.stringValue, millisBehindLatest: answer["MillisBehindLatest"]?.intValue)
    }

    /// Puts records (at most 500 at a time, 5 MB in all); returns the indices of those Kinesis
    /// refused (throttled per shard, say), with why, for the caller to send again.
    public func putRecords(_ stream: String, _ entries: [(partitionKey: String, data: [UInt8])]) async throws -> [(index: Int, error: String)] {
        let records: [JSONValue] = entries.map {
            .object([("Data", .string(Data($0.data).base64EncodedString())), ("PartitionKey", .string($0.partitionKey))])
        }
        let answer = try await service.call("PutRecords", .object([("StreamName", .string(stream)), ("Records", .array(records))]))
        guard (answer["FailedRecordCount"]?.intValue ?? 0) > 0 else { return [] }
        var failed: [(index: Int, error: String)] = []
        for (index, result) in (answer["Records"]?.arrayValue ?? []).enumerated() where result["ErrorCode"] != nil {
            failed.append((index, "\(result["ErrorCode"]?.stringValue ?? ""): \(result["ErrorMessage"]?.stringValue ?? "")"))
        }
        return failed
    }

    /// Splits `shard` in two at the middle of its hash key range (for resharding tests and drills).
    public func splitShard(_ stream: String, shard: String, newStartingHashKey: String) async throws {
        _ = try await service.call(
            "SplitShard", .object([("StreamName", .string(stream)), ("ShardToSplit", .string(shard)), ("NewStartingHashKey", .string(newStartingHashKey))]))
    }
}

extension AWSError {
    /// The shard iterator was older than five minutes: get a new one from the last sequence number.
    public var isExpiredIterator: Bool { type == "ExpiredIteratorException" }
}

extension JSONValue {
    var arrayValue: [JSONValue]? {
        if case .array(let values) = self { return values }
        return nil
    }

    var intValue: Int64? {
        switch self {
        case .int(let n): return n
        case .double(let d) where d.rounded() == d && abs(d) < 9e15: return Int64(d)
        default: return nil
        }
    }
}
