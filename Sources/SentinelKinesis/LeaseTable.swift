import AsyncHTTPClient
import Foundation
import SentinelJSON

/// The shard leases of a stream's consumers in a DynamoDB table, in the layout of the Kinesis
/// Client Library (KCL), so that operators read it with the tools they use for KCL
/// applications: one item per shard, `leaseKey` (the shard id, the hash key), `leaseOwner`,
/// `leaseCounter` (raised by every renewal and transfer), `checkpoint` (the last sequence
/// number processed, or `TRIM_HORIZON` / `SHARD_END`), `checkpointSubSequenceNumber`,
/// `ownerSwitchesSinceCheckpoint` and `parentShardId` (a string set). Every write is
/// conditional on the counter the writer last saw, so two owners never both hold a lease.
/// One attribute is this project's own: `sentinelPosition`, the number the consume loop gave
/// the record after the checkpoint (its "offset"), so a new owner numbers records on.
public struct LeaseTable: Sendable {
    public let name: String
    public let service: AWSJSONService

    /// A table over an already configured service (its retries, say).
    public init(name: String, service: AWSJSONService) {
        self.name = name
        self.service = service
    }

    public init(name: String, region: String, endpoint: String? = nil, credentials: AWSCredentialChain, http: HTTPClient) throws {
        self.name = name
        service = try AWSJSONService(
            endpoint: endpoint ?? "https://dynamodb.\(region).amazonaws.com", region: region, service: "dynamodb",
            targetPrefix: "DynamoDB_20120810", jsonVersion: "1.0", credentials: credentials, http: http)
    }

    /// One lease as stored.
    public struct Lease: Sendable, Equatable {
        public var shardID: String
        public var owner: String?
        public var counter: Int64
        /// A sequence number, `TRIM_HORIZON` or `SHARD_END`.
        public var checkpoint: String
        public var parents: [String]
        /// The consume loop's number for the record after the checkpoint.
        public var position: Int64

        public init(shardID: String, owner: String? = nil, counter: Int64 = 0, checkpoint: String = "TRIM_HORIZON", parents: [String] = [], position: Int64 = 0) {
            self.shardID = shardID
            self.owner = owner
            self.counter = counter
            self.checkpoint = checkpoint
            self.parents = parents
            self.position = position
        }

        public var isFinished: Bool { checkpoint == "SHARD_END" }
    }

    /// Creates the table (on-demand capacity) if it does not exist, and waits until it is active.
    public func create() async throws {
        do {
            _ = try await service.call(
                "CreateTable",
                .object([
                    ("TableName", .string(name)),
                    ("AttributeDefinitions", .array([.object([("AttributeName", .string("leaseKey")), ("AttributeType", .string("S"))])])),
                    ("KeySchema", .array([.object([("AttributeName", .string("leaseKey")), ("KeyType", .string("HASH"))])])),
                    ("BillingMode", .string("PAY_PER_REQUEST")),
                ]))
        } catch let error as AWSError where error.type == "ResourceInUseException" {
            // There already.
        }
        for _ in 0..<300 {
            let answer = try await service.call("DescribeTable", .object([("TableName", .string(name))]))
            if answer["Table"]?["TableStatus"]?.stringValue == "ACTIVE" { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw AWSError(type: "Timeout", message: "lease table \(name) did not become ACTIVE", status: nil)
    }

    /// Every lease (following `LastEvaluatedKey`), by shard id.
    public func leases() async throws -> [String: Lease] {
        var result: [String: Lease] = [:]
        var input: [(key: String, value: JSONValue)] = [("TableName", .string(name)), ("ConsistentRead", .bool(true))]
        while true {
            let answer = try await service.call("Scan", .object(input))
            for item in answer["Items"]?.arrayValue ?? [] {
                if let lease = Self.lease(item) { result[lease.shardID] = lease }
            }
            guard let last = answer["LastEvaluatedKey"], case .object = last else { return result }
            input = [("TableName", .string(name)), ("ConsistentRead", .bool(true)), ("ExclusiveStartKey", last)]
        }
    }

    /// Adds a lease for a shard nobody has seen yet; false if one exists.
    public func add(_ lease: Lease) async throws -> Bool {
        do {
            _ = try await service.call(
                "PutItem",
                .object([
                    ("TableName", .string(name)), ("Item", Self.item(lease)),
                    ("ConditionExpression", .string("attribute_not_exists(leaseKey)")),
                ]))
            return true
        } catch let error as AWSError where error.type == "ConditionalCheckFailedException" {
            return false
        }
    }

    /// Takes `lease` (as last read) for `owner`: only if nobody renewed or took it since.
    /// Returns the lease as now held, or nil when someone else moved first.
    public func take(_ lease: Lease, for owner: String) async throws -> Lease? {
        try await conditionalUpdate(
            lease,
            set: "leaseOwner = :owner, leaseCounter = :next, ownerSwitchesSinceCheckpoint = ownerSwitchesSinceCheckpoint + :one",
            values: [(":owner", .object([("S", .string(owner))])), (":one", Self.number(1))],
            changed: { $0.owner = owner })
    }

    /// Renews a held lease (raises its counter); nil when it was lost meanwhile.
    public func renew(_ lease: Lease) async throws -> Lease? {
        try await conditionalUpdate(lease, set: "leaseCounter = :next", values: [], owned: true, changed: { _ in })
    }

    /// Saves the checkpoint of a held lease; nil when it was lost meanwhile (the checkpoint is
    /// not written: another owner reads on from its own).
    public func checkpoint(_ lease: Lease, at sequenceNumber: String, position: Int64) async throws -> Lease? {
        try await conditionalUpdate(
            lease,
            set: "checkpoint = :checkpoint, sentinelPosition = :position, checkpointSubSequenceNumber = :zero, ownerSwitchesSinceCheckpoint = :zero, leaseCounter = :next",
            values: [(":checkpoint", .object([("S", .string(sequenceNumber))])), (":position", Self.number(position)), (":zero", Self.number(0))],
            owned: true,
            changed: {
                $0.checkpoint = sequenceNumber
                $0.position = position
            })
    }

    /// Gives a held lease up (no owner), so another consumer takes it at once.
    public func release(_ lease: Lease) async throws {
        _ = try await conditionalUpdate(lease, set: "leaseCounter = :next REMOVE leaseOwner", values: [], owned: true, changed: { $0.owner = nil })
    }

    private func conditionalUpdate(
        _ lease: Lease, set: String, values: [(String, JSONValue)], owned: Bool = false, changed: (inout Lease) -> Void
    ) async throws -> Lease? {
        var condition = "leaseCounter = :counter"
        var expressionValues: [(key: String, value: JSONValue)] = [(":counter", Self.number(lease.counter)), (":next", Self.number(lease.counter + 1))]
        if owned, let owner = lease.owner {
            condition += " AND leaseOwner = :currentOwner"
            expressionValues.append((":currentOwner", .object([("S", .string(owner))])))
        }
        expressionValues += values.map { (key: $0.0, value: $0.1) }
        do {
            _ = try await service.call(
                "UpdateItem",
                .object([
                    ("TableName", .string(name)), ("Key", .object([("leaseKey", .object([("S", .string(lease.shardID))]))])),
                    ("UpdateExpression", .string("SET " + set)), ("ConditionExpression", .string(condition)),
                    ("ExpressionAttributeValues", .object(expressionValues)),
                ]))
        } catch let error as AWSError where error.type == "ConditionalCheckFailedException" {
            return nil
        }
        var updated = lease
        updated.counter += 1
        changed(&updated)
        return updated
    }

    static func number(_ n: Int64) -> JSONValue { .object([("N", .string(String(n)))]) }

    static func item(_ lease: Lease) -> JSONValue {
        var members: [(key: String, value: JSONValue)] = [
            ("leaseKey", .object([("S", .string(lease.shardID))])), ("leaseCounter", number(lease.counter)),
            ("checkpoint", .object([("S", .string(lease.checkpoint))])), ("checkpointSubSequenceNumber", number(0)),
            ("ownerSwitchesSinceCheckpoint", number(0)), ("sentinelPosition", number(lease.position)),
        ]
        if let owner = lease.owner { members.append(("leaseOwner", .object([("S", .string(owner))]))) }
        if !lease.parents.isEmpty { members.append(("parentShardId", .object([("SS", .array(lease.parents.map(JSONValue.string)))]))) }
        return .object(members)
    }

    static func lease(_ item: JSONValue) -> Lease? {
        guard let key = item["leaseKey"]?["S"]?.stringValue else { return nil }
        func number(_ name: String) -> Int64 { item[name]?["N"]?.stringValue.flatMap { Int64($0) } ?? 0 }
        return Lease(
            shardID: key, owner: item["leaseOwner"]?["S"]?.stringValue, counter: number("leaseCounter"),
            checkpoint: item["checkpoint"]?["S"]?.stringValue ?? "TRIM_HORIZON",
            parents: item["parentShardId"]?["SS"]?.arrayValue?.compactMap(\.stringValue) ?? [], position: number("sentinelPosition"))
    }
}
