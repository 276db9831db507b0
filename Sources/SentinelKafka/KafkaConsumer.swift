import CPrefetch
import CRdKafka
import Logging

/// A Kafka consumer with manual offset commits: consumer-group subscription or manual
/// assignment, rebalance notifications, synchronous commits of explicit offsets.
///
/// `poll`, `commit` and `close` block: call them from one thread of your own (such as a
/// `DedicatedThreadExecutor`), not from Swift's cooperative pool. Rebalances are carried out
/// during `poll`, or handed to the caller to complete (`defersRebalances`), so that it can
/// finish and commit revoked partitions first.
// Unchecked: a librdkafka C handle, used by one task at a time (its owner polls and commits).
public final class KafkaConsumer: @unchecked Sendable {
    private let handle: OpaquePointer
    private let context: ClientContext
    private var closed = false
    /// The consumer queue (which the main queue is forwarded to), read by `pollBatch`.
    private let queue: OpaquePointer
    /// Where `pollBatch` receives message pointers; allocated once.
    private let batchBuffer = UnsafeMutableBufferPointer<UnsafeMutablePointer<rd_kafka_message_t>?>.allocate(capacity: 4_096)
    private var topicNames: [OpaquePointer: String] = [:]
    private var lastTopic: (handle: OpaquePointer, name: String)?

    /// The linked librdkafka's version, as `rd_kafka_version()` gives it (0xMMmmrrxx: 2.0.2 is
    /// 0x020002ff).
    public static var librdkafkaVersion: Int { Int(rd_kafka_version()) }

    /// Why the configured assignor is risky with this librdkafka, nil when it is not:
    /// before 2.3.0 a consumer using `cooperative-sticky` that is closed before its first
    /// assignment aborts the process (librdkafka issue 4312, fixed in 2.3.0).
    static func assignorWarning(strategy: String?, version: Int32) -> String? {
        guard let strategy, strategy.contains("cooperative-sticky"), version < 0x0203_0000 else { return nil }
        let text = "\(version >> 24 & 0xff).\(version >> 16 & 0xff).\(version >> 8 & 0xff)"
        return "partition.assignment.strategy \(strategy): librdkafka \(text) aborts the process when such a consumer is closed before its first assignment (fixed in 2.3.0); use range or roundrobin with this librdkafka"
    }

    /// `enable.auto.commit` and `enable.auto.offset.store` default to false here: offsets are
    /// committed only by `commit`. Every other property is librdkafka's.
    /// Errors and librdkafka's log lines go to `logger` (swift-log) when one is given, and
    /// every event to `onEvent`.
    public init(properties: [String: String], logger: Logger? = nil, onEvent: @escaping KafkaEventHandler = { _ in }) throws(KafkaError) {
        context = ClientContext(logger: logger, onEvent: onEvent)
        var all = ["enable.auto.commit": "false", "enable.auto.offset.store": "false", "enable.partition.eof": "false"]
        if properties["group.id"] == nil { all["group.id"] = "cmcd-sentinel-unassigned" }
        all.merge(properties) { _, new in new }
        if let warning = Self.assignorWarning(strategy: all["partition.assignment.strategy"], version: rd_kafka_version()) { logger?.warning("\(warning)") }
        let conf = try makeConfiguration(all, context: context)
        rd_kafka_conf_set_rebalance_cb(conf) { rk, err, partitions, opaque in
            guard let rk, let opaque else { return }
            let context = Unmanaged<ClientContext>.fromOpaque(opaque).takeUnretainedValue()
            // A rebalance still on its way when the group finished leaving (the consumer
            // closing as a rebalance assigned it partitions): the group serves nothing more,
            // and librdkafka (2.0 to 2.6 at least, its issues 4041 and 4884) then waits for
            // good for the answer to an assign, or to asking the protocol. Nothing is left to
            // hand over or give up.
            if rd_kafka_consumer_closed(rk) != 0 { return }
            let list = topicPartitions(partitions)
            let assigning = err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS
            context.onEvent(assigning ? .assigned(list) : .revoked(list))
            if context.defersRebalances, !context.closing {
                // The caller completes it after `poll` returns (`nextRebalance`).
                context.pendingRebalances.withLock { $0.append(assigning ? .assign(list) : .revoke(list)) }
                rd_kafka_yield(rk)
                return
            }
            let cooperative = rd_kafka_rebalance_protocol(rk).map { String(cString: $0) } == "COOPERATIVE"
            if assigning {
                if cooperative { _ = rd_kafka_incremental_assign(rk, partitions) } else { _ = rd_kafka_assign(rk, partitions) }
            } else {
                if cooperative { _ = rd_kafka_incremental_unassign(rk, partitions) } else { _ = rd_kafka_assign(rk, nil) }
            }
        }
        var errorText = [CChar](repeating: 0, count: 512)
        guard let handle = rd_kafka_new(RD_KAFKA_CONSUMER, conf, &errorText, errorText.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError(message: "cannot create consumer: " + String(decoding: errorText.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        rd_kafka_poll_set_consumer(handle)
        guard let queue = rd_kafka_queue_get_consumer(handle) else {
            rd_kafka_destroy(handle)
            throw KafkaError(message: "cannot get the consumer queue")
        }
        self.handle = handle
        self.queue = queue
    }

    deinit {
        close()
        rd_kafka_queue_destroy(queue)
        batchBuffer.deallocate()
        rd_kafka_destroy(handle)
        withExtendedLifetime(context) {}
    }

    /// When true (set before the first `poll`), group rebalances are not carried out during
    /// `poll`: `poll` returns early, `nextRebalance` hands each one over, and the caller
    /// finishes what it must (commit revoked partitions, choose where assigned ones start,
    /// asynchronously if it likes) and then calls `completeAssignment` or
    /// `completeRevocation`. librdkafka waits for that before the rebalance goes on. While
    /// the consumer closes, rebalances are carried out at once.
    public var defersRebalances: Bool {
        get { context.defersRebalances }
        set { context.defersRebalances = newValue }
    }

    /// The next rebalance waiting for the caller (see `defersRebalances`), oldest first.
    public func nextRebalance() -> KafkaRebalance? {
        context.pendingRebalances.withLock { $0.isEmpty ? nil : $0.removeFirst() }
    }

    /// Completes a deferred assignment: these partitions start at the given offsets, and at
    /// their committed offset where none is given.
    public func completeAssignment(_ partitions: [KafkaTopicPartition], offsets: [KafkaTopicPartition: Int64]) throws(KafkaError) {
        let list = try newPartitionList(partitions.count)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for tp in partitions {
            let offset = offsets[tp].flatMap { $0 >= 0 ? $0 : nil } ?? Int64(RD_KAFKA_OFFSET_INVALID)
            rd_kafka_topic_partition_list_add(list, tp.topic, tp.partition)?.pointee.offset = offset
        }
        if cooperative {
            try Self.check(rd_kafka_incremental_assign(handle, list), "assign")
        } else {
            let error = rd_kafka_assign(handle, list)
            if error != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(error, "assign") }
        }
    }

    /// Completes a deferred revocation: these partitions are given up.
    public func completeRevocation(_ partitions: [KafkaTopicPartition]) throws(KafkaError) {
        if cooperative {
            let list = try newPartitionList(partitions.count)
            defer { rd_kafka_topic_partition_list_destroy(list) }
            for tp in partitions { rd_kafka_topic_partition_list_add(list, tp.topic, tp.partition) }
            try Self.check(rd_kafka_incremental_unassign(handle, list), "unassign")
        } else {
            let error = rd_kafka_assign(handle, nil)
            if error != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(error, "unassign") }
        }
    }

    /// Throws the error an incremental (cooperative) assignment call returned, if any.
    private static func check(_ error: OpaquePointer?, _ what: String) throws(KafkaError) {
        guard let error else { return }
        defer { rd_kafka_error_destroy(error) }
        throw KafkaError(rd_kafka_error_code(error), what)
    }

    /// Whether the group uses the cooperative protocol (librdkafka gives none outside a group).
    private var cooperative: Bool { rd_kafka_rebalance_protocol(handle).map { String(cString: $0) } == "COOPERATIVE" }

    /// Joins the consumer group for these topics.
    public func subscribe(_ topics: [String]) throws(KafkaError) {
        let list = try newPartitionList(topics.count)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for topic in topics { rd_kafka_topic_partition_list_add(list, topic, RD_KAFKA_PARTITION_UA) }
        let error = rd_kafka_subscribe(handle, list)
        if error != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(error, "subscribe") }
    }

    /// Reads these partitions without a group rebalance, from the given offsets (nil: the
    /// committed offset, else `auto.offset.reset`).
    public func assign(_ partitions: [(KafkaTopicPartition, offset: Int64?)]) throws(KafkaError) {
        let list = try newPartitionList(partitions.count)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for (tp, offset) in partitions {
            let element = rd_kafka_topic_partition_list_add(list, tp.topic, tp.partition)
            element?.pointee.offset = offset ?? Int64(RD_KAFKA_OFFSET_STORED)
        }
        let error = rd_kafka_assign(handle, list)
        if error != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(error, "assign") }
    }

    /// Waits up to `timeoutMs` for the next record; nil when none arrived. Transient errors
    /// (broker down, partition EOF) are reported as events, not thrown; fatal ones throw.
    public func poll(timeoutMs: Int32) throws(KafkaError) -> KafkaMessage? {
        guard let message = rd_kafka_consumer_poll(handle, timeoutMs) else { return nil }
        defer { rd_kafka_message_destroy(message) }
        let m = message.pointee
        if try carriesError(m) { return nil }
        let topic = m.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
        let value = m.payload.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: m.len)) } ?? []
        let key = m.key.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: m.key_len)) }
        var result = KafkaMessage(topicPartition: KafkaTopicPartition(topic: topic, partition: m.partition), offset: m.offset, key: key, value: value)
        var headers: OpaquePointer?
        if rd_kafka_message_headers(message, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR, let headers {
            var index = 0
            var name: UnsafePointer<CChar>?
            var data: UnsafeRawPointer?
            var size = 0
            while rd_kafka_header_get_all(headers, index, &name, &data, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                let bytes = data.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
                result.headers.append((name.map { String(cString: $0) } ?? "", bytes))
                index += 1
            }
        }
        return result
    }

    /// Takes what the client has fetched, up to `max` records, waiting up to `timeoutMs` for
    /// the first only, and hands each to `body` in order as a view of librdkafka's own memory (no
    /// copy: valid only during the call). Rebalances and other callbacks are served meanwhile,
    /// as by `poll`. Returns how many records there were. Transient errors are reported as
    /// events; fatal ones throw. `prefetching` asks the cache for each next record's value
    /// while `body` works on one (off only where values are not read).
    @discardableResult
    public func pollBatch(max: Int, timeoutMs: Int32, prefetching: Bool = true, _ body: (KafkaRecordView) throws -> Void) throws -> Int {
        let capacity = Swift.max(1, Swift.min(max, batchBuffer.count))
        // What is there now, without waiting: a batch call with a timeout waits to fill the
        // whole batch, which would hold a lone record (and its alert) for the full timeout.
        var n = rd_kafka_consume_batch_queue(queue, 0, batchBuffer.baseAddress, capacity)
        guard n >= 0 else { throw KafkaError(rd_kafka_last_error(), "consume") }
        if n == 0, timeoutMs > 0, let first = rd_kafka_consumer_poll(handle, timeoutMs) {
            // Nothing was there: wait for one record, then take what came with it.
            batchBuffer[0] = first
            let rest = capacity > 1 ? rd_kafka_consume_batch_queue(queue, 0, batchBuffer.baseAddress! + 1, capacity - 1) : 0
            n = 1 + Swift.max(0, rest)
        }
        var handed = 0
        var index = 0
        defer {
            // Whatever happens in `body`, every message goes back to librdkafka.
            while index < n {
                rd_kafka_message_destroy(batchBuffer[index])
                index += 1
            }
        }
        while index < n {
            guard let message = batchBuffer[index] else {
                index += 1
                continue
            }
            let m = message.pointee
            if m.err != RD_KAFKA_RESP_ERR_NO_ERROR {
                rd_kafka_message_destroy(message)
                index += 1
                _ = try carriesError(m)
                continue
            }
            if prefetching { prefetch(after: index, of: n) }
            let view = KafkaRecordView(
                topic: topicName(m.rkt), partition: m.partition, offset: m.offset,
                key: m.key.map { UnsafeRawBufferPointer(start: $0, count: m.key_len) },
                value: UnsafeRawBufferPointer(start: m.payload, count: m.payload == nil ? 0 : m.len).assumingMemoryBound(to: UInt8.self))
            try body(view)
            rd_kafka_message_destroy(message)
            index += 1
            handed += 1
        }
        return handed
    }

    /// Whether a consumed message carries an error instead of a record. Partition EOF is no
    /// news, a fatal error throws, any other is reported as an event (the broker down, say).
    private func carriesError(_ m: rd_kafka_message_t) throws(KafkaError) -> Bool {
        guard m.err != RD_KAFKA_RESP_ERR_NO_ERROR else { return false }
        if m.err == RD_KAFKA_RESP_ERR__PARTITION_EOF { return true }
        let error = KafkaError(m.err, "consume")
        if m.err == RD_KAFKA_RESP_ERR__FATAL { throw error }
        context.onEvent(.error(error, fatal: false))
        return true
    }

    /// Asks the cache for what the records after `index` will need while `index` is worked on:
    /// the next record's value (it was written by librdkafka's thread, most likely long since
    /// gone from this core's cache) and the message after it, whose value pointer that needs.
    @inline(__always)
    private func prefetch(after index: Int, of count: Int) {
        if index + 2 < count, let later = batchBuffer[index + 2] { sentinel_prefetch(later) }
        guard index + 1 < count, let next = batchBuffer[index + 1], let payload = next.pointee.payload else { return }
        var offset = 0
        let length = Swift.min(next.pointee.len, Self.prefetchedValueBytes)
        while offset < length {
            sentinel_prefetch(payload + offset)
            offset += 64  // a cache line
        }
    }

    /// How much of the next record's value `prefetch` asks for: a CloudFront line or two.
    private static let prefetchedValueBytes = 1024

    /// Takes up to `max` records and drops them (the bare cost of fetching, for benchmarks).
    public func pollDiscarding(max: Int, timeoutMs: Int32) throws -> Int { try pollBatch(max: max, timeoutMs: timeoutMs, prefetching: false) { _ in } }

    /// The topic's name, looked up once per topic handle (not allocated per record).
    private func topicName(_ rkt: OpaquePointer?) -> String {
        guard let rkt else { return "" }
        // A batch is nearly always one topic: the last one answers without hashing.
        if let last = lastTopic, last.handle == rkt { return last.name }
        let name = topicNames[rkt] ?? String(cString: rd_kafka_topic_name(rkt))
        topicNames[rkt] = name
        lastTopic = (rkt, name)
        return name
    }

    /// Commits explicit offsets (the next offset to read, per partition) and waits for the
    /// broker to confirm.
    public func commit(_ offsets: [KafkaTopicPartition: Int64]) throws(KafkaError) {
        guard !offsets.isEmpty else { return }
        let list = try newPartitionList(offsets.count)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for (tp, offset) in offsets {
            rd_kafka_topic_partition_list_add(list, tp.topic, tp.partition)?.pointee.offset = offset
        }
        let error = rd_kafka_commit(handle, list, 0)
        if error != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(error, "commit") }
        for i in 0..<Int(list.pointee.cnt) where list.pointee.elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(list.pointee.elems[i].err, "commit \(String(cString: list.pointee.elems[i].topic))[\(list.pointee.elems[i].partition)]")
        }
    }

    /// The committed offsets of these partitions (nil where nothing is committed).
    public func committed(_ partitions: [KafkaTopicPartition], timeoutMs: Int32 = 10_000) throws(KafkaError) -> [KafkaTopicPartition: Int64?] {
        let list = try newPartitionList(partitions.count)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for tp in partitions { rd_kafka_topic_partition_list_add(list, tp.topic, tp.partition) }
        let error = rd_kafka_committed(handle, list, timeoutMs)
        if error != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(error, "committed") }
        var result: [KafkaTopicPartition: Int64?] = [:]
        for i in 0..<Int(list.pointee.cnt) {
            let e = list.pointee.elems[i]
            result[KafkaTopicPartition(topic: String(cString: e.topic), partition: e.partition)] = e.offset >= 0 ? e.offset : nil
        }
        return result
    }

    /// The offset after the last record of a partition, as the broker reports it.
    public func highWatermark(_ tp: KafkaTopicPartition, timeoutMs: Int32 = 10_000) throws(KafkaError) -> Int64 {
        var low: Int64 = 0
        var high: Int64 = 0
        let error = rd_kafka_query_watermark_offsets(handle, tp.topic, tp.partition, &low, &high, timeoutMs)
        if error != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(error, "watermarks of \(tp)") }
        return high
    }

    /// Leaves the group (revoking partitions through the rebalance handler) and stops fetching.
    public func close() {
        guard !closed else { return }
        closed = true
        context.closing = true
        _ = rd_kafka_consumer_close(handle)
    }
}

/// librdkafka's in-process mock cluster, for fast unit tests of the clients.
// Unchecked: librdkafka C handles, only created and destroyed here.
public final class KafkaMockCluster: @unchecked Sendable {
    private let handle: OpaquePointer
    private let cluster: OpaquePointer

    public init(brokers: Int32 = 1) throws(KafkaError) {
        guard let conf = rd_kafka_conf_new() else { throw KafkaError(message: "cannot allocate a configuration") }
        var errorText = [CChar](repeating: 0, count: 512)
        guard let handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &errorText, errorText.count) else {
            throw KafkaError(message: "cannot create the mock cluster's client")
        }
        guard let cluster = rd_kafka_mock_cluster_new(handle, brokers) else {
            rd_kafka_destroy(handle)
            throw KafkaError(message: "cannot create a mock cluster")
        }
        self.handle = handle
        self.cluster = cluster
    }

    deinit {
        rd_kafka_mock_cluster_destroy(cluster)
        rd_kafka_destroy(handle)
    }

    /// The `bootstrap.servers` value that reaches this cluster.
    public var bootstrapServers: String { String(cString: rd_kafka_mock_cluster_bootstraps(cluster)) }

    public func createTopic(_ name: String, partitions: Int32) throws(KafkaError) {
        let error = rd_kafka_mock_topic_create(cluster, name, partitions, 1)
        if error != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(error, "create topic \(name)") }
    }
}
