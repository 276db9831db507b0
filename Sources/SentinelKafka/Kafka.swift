import CRdKafka
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// An error reported by librdkafka.
public struct KafkaError: Error, Sendable, CustomStringConvertible {
    public var code: Int32
    public var message: String
    public var description: String { message }

    init(_ code: rd_kafka_resp_err_t, _ context: String? = nil) {
        self.code = code.rawValue
        let text = String(cString: rd_kafka_err2str(code))
        message = context.map { "\($0): \(text)" } ?? text
    }

    public init(message: String) {
        code = -1
        self.message = message
    }
}

/// A topic partition.
public struct KafkaTopicPartition: Hashable, Sendable, CustomStringConvertible, Comparable {
    public var topic: String
    public var partition: Int32
    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }
    public var description: String { "\(topic)[\(partition)]" }
    public static func < (a: Self, b: Self) -> Bool { (a.topic, a.partition) < (b.topic, b.partition) }
}

/// A consumed record.
public struct KafkaMessage: Sendable {
    public var topicPartition: KafkaTopicPartition
    public var offset: Int64
    public var key: [UInt8]?
    public var value: [UInt8]
    public var headers: [(name: String, value: [UInt8])] = []
}

/// A consumed record as librdkafka holds it: valid only inside `KafkaConsumer.pollBatch`'s body.
public struct KafkaRecordView {
    public let topic: String
    public let partition: Int32
    public let offset: Int64
    public let key: UnsafeRawBufferPointer?
    public let value: UnsafeBufferPointer<UInt8>
    public var topicPartition: KafkaTopicPartition { KafkaTopicPartition(topic: topic, partition: partition) }

    /// A view of a record in memory someone else holds (valid while `body` of the poll runs).
    public init(topic: String, partition: Int32, offset: Int64, key: UnsafeRawBufferPointer?, value: UnsafeBufferPointer<UInt8>) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
    }
}

/// A group rebalance handed to the caller (`KafkaConsumer.defersRebalances`).
public enum KafkaRebalance: Sendable, Equatable {
    /// Complete with `completeAssignment`.
    case assign([KafkaTopicPartition])
    /// Complete with `completeRevocation`, after committing what must be committed.
    case revoke([KafkaTopicPartition])
}

/// What a client reports besides messages: errors, logs, rebalances, statistics.
public enum KafkaEvent: Sendable {
    case error(KafkaError, fatal: Bool)
    case log(level: Int32, facility: String, message: String)
    /// Partitions assigned to this consumer by a group rebalance.
    case assigned([KafkaTopicPartition])
    /// Partitions taken away; reported before they are given up, on the polling thread.
    case revoked([KafkaTopicPartition])
    /// librdkafka's statistics JSON (`statistics.interval.ms`), which carries consumer lag.
    case statistics(String)
}

/// Receives a client's events. Called on librdkafka's or the polling thread: keep it short.
public typealias KafkaEventHandler = @Sendable (KafkaEvent) -> Void

/// One object passed as the opaque to every C callback of a client; it outlives the handle.
// Unchecked: C callbacks reach it through an opaque pointer; its two flags are set by the
// polling owner before the callbacks that read them run (during its own poll or close).
final class ClientContext: @unchecked Sendable {
    private let handler: KafkaEventHandler
    let logger: Logger?
    private let deliveryCounts = Mutex((delivered: 0, failed: 0, lastError: KafkaError?.none))

    init(logger: Logger?, onEvent: @escaping KafkaEventHandler) {
        self.logger = logger
        handler = onEvent
    }

    /// See `KafkaConsumer.defersRebalances`: set before the first poll, read during polls.
    var defersRebalances = false
    /// Set before the consumer closes (on the polling thread).
    var closing = false
    /// Rebalances waiting for the caller.
    let pendingRebalances = Mutex<[KafkaRebalance]>([])

    /// Logs errors and librdkafka's log lines to swift-log, then hands the event on.
    func onEvent(_ event: KafkaEvent) {
        if let logger {
            switch event {
            case .error(let error, let fatal):
                logger.log(level: fatal ? .critical : .error, "kafka: \(error.message)")
            case .log(let level, let facility, let message):
                // syslog levels: 0-2 critical, 3 error, 4 warning, 5-6 notice/info, 7 debug
                let mapped: Logger.Level = level <= 2 ? .critical : level == 3 ? .error : level == 4 ? .warning : level <= 6 ? .info : .debug
                logger.log(level: mapped, "kafka \(facility): \(message)")
            case .assigned, .revoked, .statistics:
                break  // the application decides what a rebalance means
            }
        }
        handler(event)
    }

    func recordDelivery(_ err: rd_kafka_resp_err_t) {
        deliveryCounts.withLock {
            if err == RD_KAFKA_RESP_ERR_NO_ERROR {
                $0.delivered += 1
            } else {
                $0.failed += 1
                $0.lastError = KafkaError(err, "delivery failed")
            }
        }
    }

    var deliveries: (delivered: Int, failed: Int, lastError: KafkaError?) { deliveryCounts.withLock { $0 } }
}

/// Builds a librdkafka configuration; every property is passed through unchanged, so
/// SASL/TLS settings for managed Kafka need no code.
func makeConfiguration(_ properties: [String: String], context: ClientContext) throws(KafkaError) -> OpaquePointer {
    guard let conf = rd_kafka_conf_new() else { throw KafkaError(message: "cannot allocate a configuration") }
    var errorText = [CChar](repeating: 0, count: 512)
    for (key, value) in properties.sorted(by: { $0.key < $1.key }) {
        let result = rd_kafka_conf_set(conf, key, value, &errorText, errorText.count)
        if result != RD_KAFKA_CONF_OK {
            rd_kafka_conf_destroy(conf)
            let reason = String(decoding: errorText.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw KafkaError(message: "kafka property '\(key)': \(reason)")
        }
    }
    rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(context).toOpaque())
    rd_kafka_conf_set_error_cb(conf) { rk, err, reason, opaque in
        guard let opaque else { return }
        let context = Unmanaged<ClientContext>.fromOpaque(opaque).takeUnretainedValue()
        let fatal = err == RD_KAFKA_RESP_ERR__FATAL.rawValue
        let text = reason.map { String(cString: $0) } ?? String(cString: rd_kafka_err2str(rd_kafka_resp_err_t(rawValue: err)))
        context.onEvent(.error(KafkaError(message: text), fatal: fatal))
        _ = rk
    }
    rd_kafka_conf_set_log_cb(conf) { rk, level, facility, message in
        guard let rk, let opaque = rd_kafka_opaque(rk) else { return }
        let context = Unmanaged<ClientContext>.fromOpaque(opaque).takeUnretainedValue()
        context.onEvent(
            .log(level: level, facility: facility.map { String(cString: $0) } ?? "", message: message.map { String(cString: $0) } ?? ""))
    }
    rd_kafka_conf_set_stats_cb(conf) { _, json, length, opaque in
        guard let opaque, let json else { return 0 }
        let context = Unmanaged<ClientContext>.fromOpaque(opaque).takeUnretainedValue()
        let text = String(decoding: UnsafeRawBufferPointer(start: json, count: length), as: UTF8.self)
        context.onEvent(.statistics(text))
        return 0  // librdkafka frees the JSON
    }
    return conf
}

func topicPartitions(_ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?) -> [KafkaTopicPartition] {
    guard let list else { return [] }
    return (0..<Int(list.pointee.cnt)).map { i in
        let element = list.pointee.elems[i]
        return KafkaTopicPartition(topic: String(cString: element.topic), partition: element.partition)
    }
}

/// A new partition list (librdkafka only fails to allocate when out of memory).
func newPartitionList(_ capacity: Int) throws(KafkaError) -> UnsafeMutablePointer<rd_kafka_topic_partition_list_t> {
    guard let list = rd_kafka_topic_partition_list_new(Int32(capacity)) else { throw KafkaError(message: "out of memory") }
    return list
}
