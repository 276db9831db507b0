import CoreMetrics
import Foundation
import Logging
import SentinelDaemon
import SentinelHTTP
import SentinelKafka
import SentinelKinesis
import Synchronization

/// A Kinesis stream as the consume loop's source of records: each shard is a partition (its
/// number taken from the shard id), its records numbered on from the lease's
/// `sentinelPosition`. The shards are divided among the consumers through a lease table in
/// the layout of the Kinesis Client Library (see `LeaseTable`): a lease nobody holds, or whose
/// holder stopped renewing it for `failoverSeconds`, is taken; a lease this consumer fails to
/// renew is revoked before anyone else can take it (renewals come at a third of that time). A
/// shard whose parents (before a split or merge) are not read to their end waits for them, so
/// a session's records stay in order. Commits are checkpoints in the lease table.
///
/// One fetching task per shard reads ahead (`GetRecords`) into a bounded buffer; everything
/// else runs on the consume loop's task, inside `poll`.
public final class KinesisRecordSource: RecordSource {
    public struct Configuration: Sendable {
        public var stream: String
        /// This consumer's name in the lease table.
        public var owner: String
        public var failoverSeconds: Double = 10
        /// How often the shards and the lease table are looked at again.
        public var scanSeconds: Double = 5
        /// Records fetched ahead of the loop, over all shards.
        public var maxBufferedRecords = 20_000
        /// A session's records may be in any shard (CloudFront picks the partition keys): the
        /// shards are read as one partition, into one detection state, by one daemon (others
        /// wait as standbys and take over when its leases expire). False when the stream is
        /// keyed by session id (`replay` does that): each shard is a partition of its own and
        /// the daemons share the shards.
        public var sessionsSpanShards = true

        public init(stream: String, owner: String) {
            self.stream = stream
            self.owner = owner
        }
    }

    /// A page of a shard's records, fetched ahead.
    struct Page: Sendable {
        var shard: String
        var records: [KinesisClient.Record]
        /// The shard is closed and this was its last page.
        var end: Bool
        var millisBehindLatest: Int64?
    }

    /// What fetching tasks and the loop share.
    final class Buffer: Sendable {
        struct State {
            var pages: [Page] = []
            var head = 0
            var records = 0
            /// Per shard: when (wall-clock ms) the `GetRecords` that last found it at its newest
            /// record was sent; none when its last one did not.
            var caughtUpAt: [String: Int64] = [:]
            /// Shards closed by a reshard (`ListShards` gives them an ending sequence number).
            var closed: Set<String> = []
        }
        let state = Mutex(State())
        let limit: Int
        init(limit: Int) { self.limit = limit }

        var isFull: Bool { state.withLock { $0.records >= limit } }

        func put(_ page: Page) { state.withLock { $0.pages.append(page); $0.records += page.records.count } }

        /// Pages in order, up to about `maxRecords` records.
        func take(maxRecords: Int) -> [Page] {
            state.withLock { state in
                var taken: [Page] = []
                var count = 0
                while state.head < state.pages.count, count < maxRecords || taken.isEmpty {
                    let page = state.pages[state.head]
                    state.head += 1
                    count += page.records.count
                    taken.append(page)
                }
                state.records -= count
                if state.head > 1_024 || state.head == state.pages.count {
                    state.pages.removeFirst(state.head)
                    state.head = 0
                }
                return taken
            }
        }

        func noteClosed(_ shards: [String]) { state.withLock { $0.closed.formUnion(shards) } }

        func isClosed(_ shard: String) -> Bool { state.withLock { $0.closed.contains(shard) } }

        func noteFetched(_ shard: String, caughtUpAt: Int64?) { state.withLock { $0.caughtUpAt[shard] = caughtUpAt } }

        /// The shards whose last fetch found them caught up and whose pages were all taken,
        /// with when that fetch was sent: no record that reached Kinesis before is still to come.
        func caughtUpShards() -> [String: Int64] {
            state.withLock { state in
                var result = state.caughtUpAt
                for page in state.pages[state.head...] { result[page.shard] = nil }
                return result
            }
        }

        /// Drops the pages of `shard` not yet taken.
        func drop(_ shard: String) {
            state.withLock { state in
                state.caughtUpAt[shard] = nil
                let kept = state.pages[state.head...].filter { $0.shard != shard }
                state.pages = Array(kept)
                state.head = 0
                state.records = kept.reduce(0) { $0 + $1.records.count }
            }
        }
    }

    /// A shard this consumer holds.
    struct Held {
        var lease: LeaseTable.Lease
        var partition: KafkaTopicPartition
        var fetcher: Task<Void, Never>?
        /// The number the next record gets.
        var nextPosition: Int64
        /// Positions after which a commit may checkpoint, and the sequence number there (the
        /// record before the position): every 32nd record and each page's last.
        var marks: [(position: Int64, sequenceNumber: String)] = []
        /// The shard's last record was handed to the loop; its number after it.
        var endPosition: Int64?
        /// When the lease was last taken, renewed or checkpointed (monotonic seconds).
        var renewedAt = monotonicSeconds()
    }

    let configuration: Configuration
    let kinesis: KinesisClient
    let leases: LeaseTable
    let logger: Logger
    let metrics: any MetricsFactory
    private let buffer: Buffer
    private let leasesHeld: Gauge

    /// The source's metrics (swift-metrics labels) and their help text.
    public static let metricHelp: [String: String] = [
        "cmcd_sentinel_kinesis_iterator_age_milliseconds": "How far each shard's reading is behind its newest record (MillisBehindLatest).",
        "cmcd_sentinel_kinesis_leases_held": "Shard leases this daemon holds.",
        "cmcd_sentinel_kinesis_throttles_total": "Kinesis and DynamoDB calls throttled and tried again.",
    ]
    private var held: [String: Held] = [:]
    private var byPartition: [Int32: String] = [:]
    private var rebalances: [KafkaRebalance] = []
    /// Leases held by others: the counter last seen and when it was first seen.
    private var seen: [String: (counter: Int64, since: Double)] = [:]
    private var lastScan = -Double.infinity
    /// Leases taken from a live consumer, and when their reading may start.
    private var deferred: [String: Double] = [:]
    private var lastRenewal = monotonicSeconds()
    /// With `sessionsSpanShards`: the one partition, whether the loop has taken it, and the
    /// number the next record of any shard gets.
    private var merged: KafkaTopicPartition { KafkaTopicPartition(topic: configuration.stream, partition: 0) }
    private var mergedAssigned = false
    private var mergedNext: Int64 = 0
    private var queues: [String: ShardQueue] = [:]
    /// Each shard's children (after a split or merge), as the last scan saw them.
    private var childrenOf: [String: [String]] = [:]
    /// Since when each shard, empty and not caught up, has held the merge back.
    private var emptySince: [String: Double] = [:]
    static let maxHoldSeconds = 5.0
    private var queuedRecords = 0

    /// Makes the lease table if needed and takes the first leases (handed over as assignments).
    public init(
        configuration: Configuration, kinesis: KinesisClient, leases: LeaseTable, logger: Logger, metrics: any MetricsFactory = NOOPMetricsHandler.instance
    ) async throws {
        let throttles = Counter(label: "cmcd_sentinel_kinesis_throttles_total", factory: metrics)
        var kinesisService = kinesis.service
        kinesisService.onThrottle = { throttles.increment() }
        var leaseService = leases.service
        leaseService.onThrottle = { throttles.increment() }
        self.configuration = configuration
        self.kinesis = KinesisClient(service: kinesisService)
        self.leases = LeaseTable(name: leases.name, service: leaseService)
        self.logger = logger
        self.metrics = metrics
        leasesHeld = Gauge(label: "cmcd_sentinel_kinesis_leases_held", factory: metrics)
        buffer = Buffer(limit: configuration.maxBufferedRecords)
        try await leases.create()
        try await kinesis.waitUntilActive(configuration.stream, timeoutSeconds: 120)
        try await scan()
    }

    /// The shard's partition number: the digits of `shardId-000000000012`.
    static func partitionNumber(_ shardID: String) -> Int32? {
        guard let digits = shardID.split(separator: "-").last, let n = Int32(digits), n >= 0 else { return nil }
        return n
    }

    // MARK: - RecordSource

    public func poll(max: Int, timeoutMs: Int32, _ body: (KafkaRecordView) throws -> Void) async throws -> Int {
        if configuration.sessionsSpanShards { return try await pollMerged(max: max, timeoutMs: timeoutMs, body) }
        await maintainLeases()
        var pages = buffer.take(maxRecords: max)
        let deadline = monotonicSeconds() + Double(timeoutMs) / 1000
        while pages.isEmpty, monotonicSeconds() < deadline, rebalances.isEmpty {
            try? await Task.sleep(for: .milliseconds(10))
            pages = buffer.take(maxRecords: max)
        }
        var handed = 0
        for page in pages {
            guard var shard = held[page.shard] else { continue }  // revoked meanwhile
            defer { held[page.shard] = shard }
            for (index, record) in page.records.enumerated() {
                let position = shard.nextPosition
                shard.nextPosition += 1
                if shard.nextPosition % 32 == 0 || index == page.records.count - 1 {
                    shard.marks.append((shard.nextPosition, record.sequenceNumber))
                }
                try hand(record, partition: shard.partition.partition, offset: position, body)
                handed += 1
            }
            if page.end {
                shard.endPosition = shard.nextPosition
                logger.info("\(page.shard): read to its end (closed by a reshard)")
            }
        }
        return handed
    }

    /// The shards read as one partition: their records in the order Kinesis received them
    /// (`ApproximateArrivalTimestamp`), merged from each shard's own order, so that a backlog
    /// read shard by shard does not reach the detectors shard by shard. A shard with nothing
    /// buffered holds the merge back until it has records or says it is caught up.
    private func pollMerged(max: Int, timeoutMs: Int32, _ body: (KafkaRecordView) throws -> Void) async throws -> Int {
        await maintainLeases()
        let deadline = monotonicSeconds() + Double(timeoutMs) / 1000
        var handed = 0
        while true {
            // Pages move from the shared buffer into each shard's queue here, up to the limit.
            if queuedRecords < configuration.maxBufferedRecords {
                for page in buffer.take(maxRecords: configuration.maxBufferedRecords - queuedRecords) where held[page.shard] != nil {
                    queues[page.shard, default: ShardQueue()].append(page)
                    queuedRecords += page.records.count
                }
            }
            let caughtUp = buffer.caughtUpShards()
            let reading = held.keys.filter { deferred[$0] == nil }.sorted()
            while handed < max {
                var next: (id: String, arrival: Int64)?
                for id in reading {
                    guard let head = queues[id]?.head else { continue }
                    let arrival = head.arrivalMs ?? .min
                    if next == nil || arrival < next!.arrival { next = (id, arrival) }
                }
                guard let candidate = next else { break }
                var blocked = false
                for id in reading where queues[id]?.head == nil && mayHoldBack(id, before: candidate.arrival, caughtUp: caughtUp) {
                    // Records may be on the way that came first; a shard that stays
                    // unreadable holds the others back for at most `maxHoldSeconds`.
                    let since = emptySince[id] ?? monotonicSeconds()
                    emptySince[id] = since
                    if monotonicSeconds() - since < Self.maxHoldSeconds {
                        blocked = true
                        break
                    }
                }
                guard !blocked, let id = next?.id, var shard = held[id], let record = queues[id]?.pop() else { break }
                emptySince[id] = nil
                queuedRecords -= 1
                let position = mergedNext
                mergedNext += 1
                shard.nextPosition = mergedNext
                if mergedNext % 32 == 0 || queues[id]?.head == nil { shard.marks.append((mergedNext, record.sequenceNumber)) }
                held[id] = shard
                let ended = queues[id]?.head == nil && queues[id]?.ended == true
                if ended { noteReadToEnd(id) }
                try hand(record, partition: merged.partition, offset: position, body)
                handed += 1
                if ended {
                    // Its children take over now: they are leased, and then hold the merge
                    // until their first records are in.
                    try? await scan()
                    break
                }
            }
            // A shard read to its end with nothing left: its children take over.
            let endedEmpty = reading.filter { queues[$0]?.ended == true && queues[$0]?.head == nil && held[$0]?.endPosition == nil }
            for id in endedEmpty { noteReadToEnd(id) }
            if !endedEmpty.isEmpty { try? await scan() }
            if handed > 0 || monotonicSeconds() >= deadline || !rebalances.isEmpty { return handed }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Every record of a closed shard was handed on (read as one partition).
    private func noteReadToEnd(_ id: String) {
        held[id]?.endPosition = mergedNext
        logger.info("\(id): read to its end (closed by a reshard)")
    }

    /// Whether a shard with nothing queued may still bring a record that reached Kinesis
    /// before `arrival`: it was not found caught up since then (with `clockMarginMs` for the
    /// clocks' difference), or it is closed and its end (or, once it ended, its children's
    /// first records) is still to come.
    private func mayHoldBack(_ id: String, before arrival: Int64, caughtUp: [String: Int64]) -> Bool {
        let ended = queues[id]?.ended == true || held[id]?.endPosition != nil
        if ended {
            let children = childrenOf[id] ?? []
            return children.isEmpty || children.contains { held[$0] == nil || deferred[$0] != nil }
        }
        if buffer.isClosed(id) { return true }
        guard let asked = caughtUp[id] else { return true }
        return asked - Self.clockMarginMs < arrival
    }

    /// How far this host's clock and Kinesis's arrival times may differ.
    static let clockMarginMs: Int64 = 250

    private func hand(_ record: KinesisClient.Record, partition: Int32, offset: Int64, _ body: (KafkaRecordView) throws -> Void) throws {
        try record.data.withUnsafeBufferPointer { value in
            try record.partitionKey.utf8CString.withUnsafeBytes { key in
                try body(
                    KafkaRecordView(
                        topic: configuration.stream, partition: partition, offset: offset, key: UnsafeRawBufferPointer(rebasing: key.dropLast()),
                        value: value))
            }
        }
    }

    /// A shard's records taken from the buffer, not yet handed to the loop.
    struct ShardQueue {
        private var records: [KinesisClient.Record] = []
        private var index = 0
        /// The shard's last page is in.
        private(set) var ended = false

        var head: KinesisClient.Record? { index < records.count ? records[index] : nil }

        mutating func append(_ page: Page) {
            if index > 0, index == records.count {
                records.removeAll(keepingCapacity: true)
                index = 0
            }
            records += page.records
            if page.end { ended = true }
        }

        mutating func pop() -> KinesisClient.Record? {
            guard index < records.count else { return nil }
            index += 1
            return records[index - 1]
        }
    }

    public func caughtUp() -> Set<KafkaTopicPartition>? {
        let shards = buffer.caughtUpShards()
        if configuration.sessionsSpanShards {
            let reading = held.keys.filter { deferred[$0] == nil }
            return !reading.isEmpty && reading.allSatisfy { shards[$0] != nil } ? [merged] : []
        }
        return Set(shards.keys.compactMap { held[$0]?.partition })
    }

    /// The shards whose records a partition of the loop holds.
    private func shards(of tp: KafkaTopicPartition) -> [String] {
        if configuration.sessionsSpanShards { return tp == merged ? held.keys.sorted() : [] }
        return byPartition[tp.partition].map { [$0] } ?? []
    }

    public func nextRebalance() -> KafkaRebalance? { rebalances.isEmpty ? nil : rebalances.removeFirst() }

    public func completeAssignment(_ partitions: [KafkaTopicPartition], offsets: [KafkaTopicPartition: Int64]) async throws {
        for tp in partitions {
            if configuration.sessionsSpanShards, tp == merged { mergedAssigned = true }
            for id in shards(of: tp) where held[id]?.fetcher == nil && deferred[id] == nil {
                if let offset = offsets[tp] { logger.warning("\(id): cannot start at \(offset) (not a checkpoint of the lease table); starting at its lease's") }
                startFetching(id)
            }
        }
    }

    /// Reads the shard on from its lease's checkpoint.
    private func startFetching(_ id: String) {
        guard var shard = held[id], shard.fetcher == nil else { return }
        let start: KinesisClient.StartingPosition =
            switch shard.lease.checkpoint {
            case "TRIM_HORIZON", "": .trimHorizon
            case "LATEST": .latest
            default: .afterSequenceNumber(shard.lease.checkpoint)
            }
        shard.fetcher = fetch(id, from: start)
        held[id] = shard
    }

    public func completeRevocation(_ partitions: [KafkaTopicPartition]) async throws {}

    public func commit(_ offsets: [KafkaTopicPartition: Int64]) async throws {
        for (tp, offset) in offsets {
            for id in shards(of: tp) {
            guard var shard = held[id], offset > shard.lease.position else { continue }
            let checkpoint: (sequence: String, position: Int64)
            if let end = shard.endPosition, offset >= end {
                checkpoint = ("SHARD_END", end)
            } else if let mark = shard.marks.last(where: { $0.position <= offset }) {
                checkpoint = (mark.sequenceNumber, mark.position)
            } else {
                continue
            }
            guard checkpoint.position > shard.lease.position || checkpoint.sequence == "SHARD_END" else { continue }
            if let updated = try await leases.checkpoint(shard.lease, at: checkpoint.sequence, position: checkpoint.position) {
                shard.lease = updated
                shard.renewedAt = monotonicSeconds()
                shard.marks.removeAll { $0.position <= checkpoint.position }
                held[id] = shard
            } else {
                lose(id, "its checkpoint found it taken")
            }
            }
        }
    }

    public func committed(_ partitions: [KafkaTopicPartition]) async throws -> [KafkaTopicPartition: Int64?] {
        var result: [KafkaTopicPartition: Int64?] = [:]
        for tp in partitions where !configuration.sessionsSpanShards {
            guard let id = byPartition[tp.partition], let shard = held[id] else { continue }
            result[tp] = shard.lease.checkpoint == "TRIM_HORIZON" ? nil : shard.lease.position
        }
        return result
    }

    public func close() async {
        for (id, shard) in held {
            shard.fetcher?.cancel()
            // Given up at once: another consumer takes it without waiting for the failover time.
            do { try await leases.release(shard.lease) } catch { logger.warning("\(id): lease not released (\(error)); others take it after the failover time") }
        }
        for shard in held.values { await shard.fetcher?.value }
        held.removeAll()
    }

    // MARK: - Leases

    /// Renews the held leases when due and looks at the shards and the lease table again.
    private func maintainLeases() async {
        let now = monotonicSeconds()
        if now - lastRenewal >= configuration.failoverSeconds / 3 {
            lastRenewal = now
            for id in held.keys.sorted() {
                guard let shard = held[id] else { continue }
                do {
                    if let renewed = try await leases.renew(shard.lease) {
                        held[id]?.lease = renewed
                        held[id]?.renewedAt = monotonicSeconds()
                    } else {
                        lose(id, "another consumer took it")
                    }
                } catch {
                    // Unsure whether it is still ours: stop before the failover time lets another take it.
                    if monotonicSeconds() - shard.renewedAt > configuration.failoverSeconds * 2 / 3 { lose(id, "it could not be renewed: \(error)") }
                    logger.warning("\(id): lease renewal failed: \(error)")
                }
            }
        }
        if now - lastScan >= configuration.scanSeconds {
            do { try await scan() } catch { logger.warning("Kinesis shards or leases could not be read (will retry): \(error)") }
        }
        startDeferred()
    }

    /// Adds leases for new shards and takes those that are free, or whose holder went quiet,
    /// and whose parents are read to their end.
    private func scan() async throws {
        lastScan = monotonicSeconds()
        let shards = try await kinesis.listShards(configuration.stream)
        buffer.noteClosed(shards.filter { !$0.isOpen }.map(\.id))
        childrenOf = [:]
        for shard in shards { for parent in shard.parents { childrenOf[parent, default: []].append(shard.id) } }
        var table = try await leases.leases()
        for shard in shards where table[shard.id] == nil {
            let lease = LeaseTable.Lease(shardID: shard.id, parents: shard.parents)
            if try await leases.add(lease) { table[shard.id] = lease }
        }
        if table.values.contains(where: { $0.shardID != "" && Self.partitionNumber($0.shardID) == nil }) {
            logger.warning("shard ids without a number: those shards are not read")
        }
        let now = monotonicSeconds()
        // Other consumers are alive while they renew their leases; a lease whose counter stood
        // still for the failover time is free to take.
        var alive: [String: [String]] = [:]
        var expired: Set<String> = []
        for id in table.keys.sorted() {
            guard let lease = table[id], !lease.isFinished, let owner = lease.owner, owner != configuration.owner else { continue }
            if let last = seen[id], last.counter == lease.counter {
                if now - last.since >= configuration.failoverSeconds {
                    expired.insert(id)
                    continue
                }
            } else {
                seen[id] = (lease.counter, now)
            }
            alive[owner, default: []].append(id)
        }
        // A fair share: the unfinished leases over the consumers alive, this one included.
        let unfinished = table.values.filter { !$0.isFinished }.count
        let workers = alive.count + 1
        // Sessions spanning shards: one daemon reads them all, the others stand by.
        let fairShare = configuration.sessionsSpanShards ? 0 : unfinished / workers
        let most = configuration.sessionsSpanShards ? Int.max : fairShare + (unfinished % workers > 0 ? 1 : 0)
        func eligible(_ id: String) -> Bool {
            guard let lease = table[id], !lease.isFinished, held[id] == nil, Self.partitionNumber(id) != nil else { return false }
            // Parents first: finished in the table, or read to their end here.
            return lease.parents.allSatisfy { parent in
                guard let p = table[parent] else { return true }  // trimmed long ago
                return p.isFinished || held[parent]?.endPosition != nil
            }
        }
        var taken: [KafkaTopicPartition] = []
        for id in table.keys.sorted() where held.count < most && eligible(id) {
            guard let lease = table[id], lease.owner == nil || lease.owner == configuration.owner || expired.contains(id) else { continue }
            if let tp = try await take(lease) { taken.append(tp) }
        }
        // Below the fair share with nothing free: one lease a scan from the busiest consumer.
        // It learns at its next renewal (a third of the failover time) and stops reading that
        // shard; this one starts reading after the failover time, so the two never overlap.
        if held.count < fairShare, let busiest = alive.max(by: { ($0.value.count, $1.key) < ($1.value.count, $0.key) }),
            busiest.value.count > held.count + 1, let id = busiest.value.sorted().last(where: eligible), let lease = table[id]
        {
            if (try await take(lease, startingAt: now + configuration.failoverSeconds)) != nil {
                logger.info("\(id): taken from \(busiest.key) for balance (\(busiest.value.count) leases there); reading starts in \(configuration.failoverSeconds) s")
            }
        }
        if configuration.sessionsSpanShards {
            // One partition: handed over once; shards taken later are read at once.
            if !taken.isEmpty, !mergedAssigned, !rebalances.contains(.assign([merged])) { rebalances.append(.assign([merged])) }
            if mergedAssigned { for tp in taken { for id in held.keys where held[id]?.partition == tp { startFetching(id) } } }
        } else if !taken.isEmpty {
            rebalances.append(.assign(taken))
        }
        leasesHeld.record(held.count)
    }

    /// Takes `lease` (as read); its partition, handed over as an assignment now (nil
    /// `startingAt`) or once `startingAt` has passed (see `startDeferred`).
    private func take(_ lease: LeaseTable.Lease, startingAt: Double? = nil) async throws -> KafkaTopicPartition? {
        guard let number = Self.partitionNumber(lease.shardID), let mine = try await leases.take(lease, for: configuration.owner) else { return nil }
        let id = lease.shardID
        seen[id] = nil
        let tp = KafkaTopicPartition(topic: configuration.stream, partition: number)
        held[id] = Held(lease: mine, partition: tp, nextPosition: mine.position)
        byPartition[number] = id
        mergedNext = max(mergedNext, mine.position)
        logger.info("\(id): lease taken at \(mine.checkpoint) (record number \(mine.position))")
        if let startingAt {
            deferred[id] = startingAt
            return nil
        }
        return tp
    }

    /// Hands over the leases taken from another consumer once it has had time to stop.
    private func startDeferred() {
        let now = monotonicSeconds()
        let due = deferred.filter { $0.value <= now }.keys.sorted()
        guard !due.isEmpty else { return }
        for id in due { deferred[id] = nil }
        let partitions = due.compactMap { held[$0]?.partition }
        if !partitions.isEmpty { rebalances.append(.assign(partitions)) }
    }

    /// A lease is no longer this consumer's: its records stop here.
    private func lose(_ id: String, _ why: String) {
        guard let shard = held.removeValue(forKey: id) else { return }
        shard.fetcher?.cancel()
        let wasReading = deferred.removeValue(forKey: id) == nil
        if let queue = queues.removeValue(forKey: id) {
            var rest = queue
            while rest.pop() != nil { queuedRecords -= 1 }
        }
        byPartition[shard.partition.partition] = nil
        buffer.drop(id)
        if configuration.sessionsSpanShards {
            // The partition goes only with the last shard.
            if held.isEmpty, mergedAssigned {
                mergedAssigned = false
                rebalances.append(.revoke([merged]))
            }
        } else if wasReading {
            rebalances.append(.revoke([shard.partition]))
        }
        leasesHeld.record(held.count)
        logger.warning("\(id): lease lost (\(why)); its records are left to its new holder")
    }

    // MARK: - Fetching

    /// Reads a shard ahead of the loop: `GetRecords` at most five times a second while caught
    /// up, throttling and errors retried with backoff, an expired iterator renewed from the last
    /// record fetched.
    private func fetch(_ shard: String, from start: KinesisClient.StartingPosition) -> Task<Void, Never> {
        let kinesis = self.kinesis
        let stream = configuration.stream
        let buffer = self.buffer
        let logger = self.logger
        let age = Gauge(label: "cmcd_sentinel_kinesis_iterator_age_milliseconds", dimensions: [("shard", shard)], factory: metrics)
        return Task {
            var position = start
            var iterator: String?
            var failures = 0
            while !Task.isCancelled {
                do {
                    if iterator == nil { iterator = try await kinesis.shardIterator(stream, shard: shard, from: position) }
                    let asked = Int64(Date().timeIntervalSince1970 * 1000)
                    let page = try await kinesis.records(iterator!)
                    failures = 0
                    if let behind = page.millisBehindLatest { age.record(behind) }
                    if let last = page.records.last { position = .afterSequenceNumber(last.sequenceNumber) }
                    // The end of a closed shard: no next iterator (as AWS says it), or nothing
                    // more while caught up (as some implementations say it).
                    let end = page.nextIterator == nil || (page.records.isEmpty && page.millisBehindLatest == 0 && buffer.isClosed(shard))
                    if !page.records.isEmpty || end {
                        while buffer.isFull, !Task.isCancelled { try await Task.sleep(for: .milliseconds(20)) }
                        buffer.put(Page(shard: shard, records: page.records, end: end, millisBehindLatest: page.millisBehindLatest))
                    }
                    // After the records are in: a shard said caught up has nothing older on the way.
                    buffer.noteFetched(shard, caughtUpAt: page.millisBehindLatest == 0 ? asked : nil)
                    if end { return }
                    iterator = page.nextIterator
                    if page.records.isEmpty || (page.millisBehindLatest ?? 1) == 0 { try await Task.sleep(for: .milliseconds(200)) }
                } catch let error as AWSError where error.isExpiredIterator {
                    iterator = nil
                } catch is CancellationError {
                    return
                } catch {
                    failures += 1
                    iterator = nil
                    buffer.noteFetched(shard, caughtUpAt: nil)
                    if failures == 1 || failures % 10 == 0 { logger.warning("\(shard): GetRecords failed (\(failures) in a row; will retry): \(error)") }
                    try? await Task.sleep(for: .milliseconds(min(200 << min(failures, 5), 5_000)))
                }
            }
        }
    }
}
