import CRdKafka

#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization

/// A Kafka producer: keyed produce, delivery reports, flush.
///
/// Thread-safe as librdkafka is; `flush` and `poll` block, so call them off Swift's
/// cooperative pool (from a thread of your own or a synchronous command).
// Unchecked: it holds librdkafka C handles, which librdkafka makes safe to use from any thread.
public final class KafkaProducer: @unchecked Sendable {
    private let handle: OpaquePointer
    private let context: ClientContext
    /// Topic handles by name (C pointers, used under the lock only).
    private let topics = Mutex<[String: TopicHandle]>([:])

    /// - Parameter properties: librdkafka properties (`bootstrap.servers` at least).
    /// Errors and librdkafka's log lines go to `logger` (swift-log) when one is given, and
    /// every event to `onEvent`.
    public init(properties: [String: String], logger: Logger? = nil, onEvent: @escaping KafkaEventHandler = { _ in }) throws(KafkaError) {
        context = ClientContext(logger: logger, onEvent: onEvent)
        let conf = try makeConfiguration(properties, context: context)
        rd_kafka_conf_set_dr_msg_cb(conf) { _, message, opaque in
            guard let opaque, let message else { return }
            Unmanaged<ClientContext>.fromOpaque(opaque).takeUnretainedValue().recordDelivery(message.pointee.err)
            // A record sent with a delivery group holds a reference to it until this report.
            if let group = message.pointee._private {
                Unmanaged<DeliveryGroup>.fromOpaque(group).takeRetainedValue().record(message.pointee.err)
            }
        }
        var errorText = [CChar](repeating: 0, count: 512)
        guard let handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &errorText, errorText.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError(message: "cannot create producer: " + String(decoding: errorText.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        self.handle = handle
    }

    deinit {
        _ = rd_kafka_flush(handle, 5_000)
        topics.withLock { for topic in $0.values { rd_kafka_topic_destroy(topic.pointer) } }
        rd_kafka_destroy(handle)
        withExtendedLifetime(context) {}
    }

    private func topicHandle(_ name: String) throws(KafkaError) -> OpaquePointer {
        let handle = self.handle
        let result: TopicHandle? = topics.withLock { topics in
            if let existing = topics[name] { return existing }
            guard let created = rd_kafka_topic_new(handle, name, nil) else { return nil }
            topics[name] = TopicHandle(pointer: created)
            return TopicHandle(pointer: created)
        }
        guard let result = result?.pointer else { throw KafkaError(rd_kafka_last_error(), "topic \(name)") }
        return result
    }

    /// Queues one record (the key picks the partition). When the local queue is full it
    /// serves delivery reports and tries again, for up to `queueFullWaitMs`.
    public func send(topic: String, key: [UInt8]?, value: [UInt8], queueFullWaitMs: Int = 30_000) throws(KafkaError) {
        let rkt = try topicHandle(topic)
        var waited = 0
        while true {
            let status = value.withUnsafeBufferPointer { v in
                if let key {
                    return key.withUnsafeBufferPointer { k in
                        rd_kafka_produce(
                            rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, UnsafeMutableRawPointer(mutating: v.baseAddress),
                            v.count, k.baseAddress, k.count, nil)
                    }
                }
                return rd_kafka_produce(
                    rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, UnsafeMutableRawPointer(mutating: v.baseAddress), v.count,
                    nil, 0, nil)
            }
            if status == 0 { return }
            let error = rd_kafka_last_error()
            guard error == RD_KAFKA_RESP_ERR__QUEUE_FULL, waited < queueFullWaitMs else { throw KafkaError(error, "produce") }
            rd_kafka_poll(handle, 100)
            waited += 100
        }
    }

    /// Queues one record without waiting, counted in `group`, whose `wait` returns once the
    /// broker has confirmed (or refused) every record counted in it. Throws at once when
    /// librdkafka's queue is full, so an async caller never blocks on it.
    public func send(topic: String, key: [UInt8], value: [UInt8], group: DeliveryGroup) throws(KafkaError) {
        let rkt = try topicHandle(topic)
        group.expectOne()
        let opaque = Unmanaged.passRetained(group).toOpaque()
        let status = value.withUnsafeBufferPointer { v in
            key.withUnsafeBufferPointer { k in
                rd_kafka_produce(
                    rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, UnsafeMutableRawPointer(mutating: v.baseAddress), v.count,
                    k.baseAddress, k.count, opaque)
            }
        }
        if status != 0 {
            let error = rd_kafka_last_error()
            Unmanaged<DeliveryGroup>.fromOpaque(opaque).takeRetainedValue().record(error)
            throw KafkaError(error, "produce")
        }
    }

    /// Queues one record with headers (a dead-letter record carrying its reason, say).
    public func send(topic: String, key: [UInt8]?, value: [UInt8], headers: [(name: String, value: String)]) throws(KafkaError) {
        // C strings that must live through the call.
        let topicName = strdup(topic)
        let names = headers.map { strdup($0.name) }
        let values = headers.map { Array($0.value.utf8) }
        defer {
            free(topicName)
            names.forEach { free($0) }
        }
        var vus: [rd_kafka_vu_t] = []
        var v = rd_kafka_vu_t()
        v.vtype = RD_KAFKA_VTYPE_TOPIC
        v.u.cstr = UnsafePointer(topicName)
        vus.append(v)
        v = rd_kafka_vu_t()
        v.vtype = RD_KAFKA_VTYPE_MSGFLAGS
        v.u.i = RD_KAFKA_MSG_F_COPY
        vus.append(v)
        let error: OpaquePointer? = value.withUnsafeBufferPointer { valueBytes in
            (key ?? []).withUnsafeBufferPointer { keyBytes in
                var all = vus
                var item = rd_kafka_vu_t()
                item.vtype = RD_KAFKA_VTYPE_VALUE
                item.u.mem.ptr = UnsafeMutableRawPointer(mutating: valueBytes.baseAddress)
                item.u.mem.size = valueBytes.count
                all.append(item)
                if key != nil {
                    item = rd_kafka_vu_t()
                    item.vtype = RD_KAFKA_VTYPE_KEY
                    item.u.mem.ptr = UnsafeMutableRawPointer(mutating: keyBytes.baseAddress)
                    item.u.mem.size = keyBytes.count
                    all.append(item)
                }
                return withHeaderItems(names, values) { headerItems in
                    rd_kafka_produceva(handle, all + headerItems, all.count + headerItems.count)
                }
            }
        }
        if let error {
            defer { rd_kafka_error_destroy(error) }
            throw KafkaError(message: "produce to \(topic): \(String(cString: rd_kafka_error_string(error)))")
        }
    }

    private func withHeaderItems<T>(_ names: [UnsafeMutablePointer<CChar>?], _ values: [[UInt8]], _ body: ([rd_kafka_vu_t]) -> T) -> T {
        var items: [rd_kafka_vu_t] = []
        func build(_ i: Int) -> T {
            if i == values.count { return body(items) }
            return values[i].withUnsafeBufferPointer { bytes in
                var item = rd_kafka_vu_t()
                item.vtype = RD_KAFKA_VTYPE_HEADER
                item.u.header.name = UnsafePointer(names[i])
                item.u.header.val = UnsafeRawPointer(bytes.baseAddress)
                item.u.header.size = bytes.count
                items.append(item)
                return build(i + 1)
            }
        }
        return build(0)
    }

    /// Asks the cluster for its metadata and throws when no broker answers within
    /// `timeoutMs` (a wrong address, a broker down), so that a tool can stop at once with the
    /// reason rather than queue records no broker takes until its flush times out.
    public func requireBroker(timeoutMs: Int32) throws(KafkaError) {
        var metadata: UnsafePointer<rd_kafka_metadata_t>?
        let error = rd_kafka_metadata(handle, 0, nil, &metadata, timeoutMs)
        if let metadata { rd_kafka_metadata_destroy(metadata) }
        if error != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(error, "no broker answered within \(timeoutMs) ms")
        }
    }

    /// Serves delivery reports and events for up to `timeoutMs`.
    public func poll(timeoutMs: Int32 = 0) { rd_kafka_poll(handle, timeoutMs) }

    /// Waits until every queued record is delivered or has failed.
    public func flush(timeoutMs: Int32) throws(KafkaError) {
        let error = rd_kafka_flush(handle, timeoutMs)
        if error != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(error, "flush") }
    }

    /// Records confirmed by the broker, records that failed, and the last failure.
    public var deliveries: (delivered: Int, failed: Int, lastError: KafkaError?) { context.deliveries }
}

/// A librdkafka topic handle (thread-safe in librdkafka; owned by its producer).
struct TopicHandle: @unchecked Sendable {
    // Unchecked: a C handle, which librdkafka makes safe to use from any thread.
    let pointer: OpaquePointer
}

/// Records sent together (one HTTP batch, say), and whether the broker has them all.
public final class DeliveryGroup: Sendable {
    private struct State {
        var outstanding = 0
        var failure: KafkaError?
        var waiter: CheckedContinuation<KafkaError?, Never>?
    }
    private let state = Mutex(State())

    public init() {}

    func expectOne() { state.withLock { $0.outstanding += 1 } }

    /// A delivery report (from librdkafka's poll).
    func record(_ error: rd_kafka_resp_err_t) {
        let resume: (CheckedContinuation<KafkaError?, Never>, KafkaError?)? = state.withLock { s in
            s.outstanding -= 1
            if error != RD_KAFKA_RESP_ERR_NO_ERROR, s.failure == nil { s.failure = KafkaError(error, "delivery failed") }
            guard s.outstanding == 0, let waiter = s.waiter else { return nil }
            s.waiter = nil
            return (waiter, s.failure)
        }
        if let (waiter, failure) = resume { waiter.resume(returning: failure) }
    }

    /// Waits until every record of the group has a delivery report; the first failure, or nil.
    /// Delivery reports arrive only while someone polls the producer.
    public func delivered() async -> KafkaError? {
        await withCheckedContinuation { continuation in
            let ready: KafkaError?? = state.withLock { s in
                if s.outstanding == 0 { return .some(s.failure) }
                s.waiter = continuation
                return .none
            }
            if case .some(let failure) = ready { continuation.resume(returning: failure) }
        }
    }
}
