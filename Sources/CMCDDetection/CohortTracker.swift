import CMCDRecords
import SentinelJSON

/// One cohort's figures over one window: what `cohorts.incidents` judge and rollups report.
public struct CohortWindow: Sendable, Equatable, OpenWindowStart {
    /// Event time (ms) the window starts.
    public var start: Int64 = 0
    public var requests = 0
    public var errorRequests = 0
    /// Sessions with a request in the window.
    public var sessions = 0
    public var sessionsStarted = 0
    public var stalledSessions = 0
    public var criticalDropSessions = 0
    public var stuckStartupSessions = 0
    public var watchedMs: Int64 = 0
    public var stalledMs: Int64 = 0
    /// Startup times measured in the window (at most `maxStartups`, the first ones).
    public var startups: [Int32] = []
    public var bitrateSumKbps: Int64 = 0
    public var bitrateCount = 0
    public var throughputSumKbps: Int64 = 0
    public var throughputCount = 0
    /// A few sessions that were stalled, had a critical drop or a stuck startup.
    public var exampleSessions: [String] = []

    static let maxStartups = 4_096
    static let maxExamples = 5

    public init() {}

    public var rebufferRatio: Double { watchedMs > 0 ? min(Double(stalledMs) / Double(watchedMs), 1) : 0 }
    public var averageBitrateKbps: Double? { bitrateCount > 0 ? Double(bitrateSumKbps) / Double(bitrateCount) : nil }
    public var averageThroughputKbps: Double? { throughputCount > 0 ? Double(throughputSumKbps) / Double(throughputCount) : nil }

    /// The nearest-rank percentile of the window's startup times (nil without any).
    public func startupPercentile(_ p: Double) -> Int64? {
        guard !startups.isEmpty else { return nil }
        // Sorted once when the window closes (`closeOldest`); sorted here otherwise.
        let sorted = startups.indices.dropFirst().allSatisfy { startups[$0 - 1] <= startups[$0] } ? startups : startups.sorted()
        let rank = Int((p * Double(sorted.count)).rounded(.up)) - 1
        return Int64(sorted[min(max(rank, 0), sorted.count - 1)])
    }

    /// The series' value, or nil when the window has nothing to say about it.
    public func value(of metric: CohortMetric) -> Double? {
        func share(_ n: Int, of total: Int) -> Double? { total > 0 ? Double(n) / Double(total) : nil }
        switch metric {
        case .rebufferRatio: return watchedMs > 0 ? rebufferRatio : nil
        case .starvingShare: return share(stalledSessions, of: sessions)
        case .criticalDropShare: return share(criticalDropSessions, of: sessions)
        case .stuckStartupShare: return share(stuckStartupSessions, of: sessions)
        case .errorShare: return share(errorRequests, of: requests)
        case .startupP50: return startupPercentile(0.5).map(Double.init)
        case .startupP95: return startupPercentile(0.95).map(Double.init)
        }
    }

    /// How many sessions (requests, for errors; startups, for startup times) the metric says
    /// were hurt, given the rule's threshold.
    func affected(by rule: CohortRules.Incident) -> Int {
        switch rule.metric {
        case .rebufferRatio, .starvingShare: return stalledSessions
        case .criticalDropShare: return criticalDropSessions
        case .stuckStartupShare: return stuckStartupSessions
        case .errorShare: return errorRequests
        case .startupP50, .startupP95:
            let limit = rule.above ?? 0
            return startups.count { Double($0) > limit }
        }
    }

    /// The number of sessions the rule's sample is counted in.
    func population(for rule: CohortRules.Incident) -> Int {
        switch rule.metric {
        case .errorShare: return requests
        case .startupP50, .startupP95: return startups.count
        default: return sessions
        }
    }

    mutating func add(_ sample: Sample, _ o: SessionObservation, statusClass: UInt8) {
        requests += 1
        if statusClass == 4 || statusClass == 5 { errorRequests += 1 }
        if o.firstInWindow { sessions += 1 }
        if o.isNew { sessionsStarted += 1 }
        if o.firstStalledInWindow { stalledSessions += 1 }
        if o.firstCriticalDropInWindow { criticalDropSessions += 1 }
        if o.firstStuckInWindow { stuckStartupSessions += 1 }
        if o.firstStalledInWindow || o.firstCriticalDropInWindow || o.firstStuckInWindow, exampleSessions.count < Self.maxExamples {
            let id = sample.sessionID
            if !exampleSessions.contains(id) { exampleSessions.append(id) }
        }
        watchedMs += o.watchedMs
        stalledMs += o.stalledMs
        if let startup = o.startupMs, startups.count < Self.maxStartups { startups.append(startup) }
    }

    /// Adds another window's figures of the same time (a narrower cohort's, into a wider one).
    mutating func merge(_ other: CohortWindow) {
        requests += other.requests
        errorRequests += other.errorRequests
        sessions += other.sessions
        sessionsStarted += other.sessionsStarted
        stalledSessions += other.stalledSessions
        criticalDropSessions += other.criticalDropSessions
        stuckStartupSessions += other.stuckStartupSessions
        watchedMs += other.watchedMs
        stalledMs += other.stalledMs
        if startups.count < Self.maxStartups { startups += other.startups.prefix(Self.maxStartups - startups.count) }
        bitrateSumKbps &+= other.bitrateSumKbps
        bitrateCount += other.bitrateCount
        throughputSumKbps &+= other.throughputSumKbps
        throughputCount += other.throughputCount
        for id in other.exampleSessions where exampleSessions.count < Self.maxExamples && !exampleSessions.contains(id) { exampleSessions.append(id) }
    }

    mutating func addMedia(bitrate: Int64?, throughput: Int64?) {
        if let bitrate, bitrate > 0 {
            bitrateSumKbps &+= bitrate
            bitrateCount += 1
        }
        if let throughput, throughput > 0 {
            throughputSumKbps &+= throughput
            throughputCount += 1
        }
    }
}

/// Counts of what the cohort tracker did.
public struct CohortStatistics: Sendable, Equatable {
    public var windowsClosed = 0
    public var liveCohorts = 0
    /// New cohorts not tracked because `cohorts.max_cohorts` were live.
    public var cohortsRefused = 0
    public var cohortsForgotten = 0
    /// Samples dated before the open window, counted in it.
    public var lateSamples = 0
    public var incidentsFired = 0
    /// Firing cohorts reported as part of a wider or narrower one (root cause).
    public var incidentsFolded = 0
    /// Incident findings emitted, by severity and status (type `incident`).
    public var findings: [DetectionStatistics.FindingKey: Int] = [:]
    public init() {}
}

/// Cohort windows and incidents: every sample is counted in the tumbling window of each cohort
/// it belongs to (edge, content, ...); when a window closes, `cohorts.incidents` judge each
/// cohort's series against thresholds and its own baseline, and incidents fire and resolve as
/// findings of type `incident`. Pure: fed samples with the engine's observation, driven by
/// event time, no IO.
public struct CohortTracker: Sendable {
    public let rules: CohortRules
    let startupCriticalMs: Int64
    public private(set) var statistics = CohortStatistics()
    /// Windows not yet closed, oldest first: a sample counts in the window of its own time, and
    /// a window closes when the watermark given to `advance` (the slowest input's event time)
    /// has passed its end, so a partition read behind the others still counts where it belongs.
    var open: [OpenWindow] = []
    /// Where in `open` the last sample's window was: the next sample's is most often the same
    /// (a batch of one partition's records), found without a search. A hint, checked before use.
    private var lastOpenIndex = 0
    /// The end of the newest closed window: samples before it are late (counted, not used).
    public private(set) var closedThrough = Int64.min
    /// Every sample of the window being closed, whatever its cohort (for the share an incident
    /// explains).
    var overall = CohortWindow()

    /// Keep each closed window's figures per cohort for `takeRollups` (the `cmcd_qoe` series).
    public var collectsRollups = false
    var rollups: [CohortRollup] = []

    /// The closed windows' figures since the last call (when `collectsRollups`).
    public mutating func takeRollups() -> [CohortRollup] {
        defer { rollups.removeAll(keepingCapacity: true) }
        return rollups
    }

    /// One open window: every sample's figures (each cohort keeps its own, `Cohort.open`).
    struct OpenWindow: Sendable, OpenWindowStart {
        var start: Int64
        var overall = CohortWindow()
    }

    /// A cohort's rule state: the breach it is in and its baseline.
    struct RuleState: Sendable {
        enum Phase: Sendable { case inactive, pending, firing, resolving }
        var phase = Phase.inactive
        /// Start of the first breaching window of the current episode.
        var breachStartedAt: Int64 = 0
        /// Start of the first clear window while resolving.
        var clearSince: Int64 = 0
        /// The incident fired as part of another cohort's (root cause): it sends nothing.
        var folded = false
        var baselineMean = 0.0
        var baselineVariance = 0.0
        var baselineWindows = 0
        var lastValue: Double?
    }

    struct Cohort: Sendable {
        var group: Int
        var values: [String]
        var hash: Int
        /// Its figures in the window being closed (empty otherwise).
        var window = CohortWindow()
        /// Its figures in the windows still open, oldest first (`CohortWindow.start`).
        var open: [CohortWindow] = []
        var lastActiveWindow: Int64 = 0
        var ruleStates: [RuleState]
        /// Where in `open` its last sample's window was (a hint, as `CohortTracker.lastOpenIndex`).
        var lastOpenIndex = 0
    }

    var cohorts: [Cohort] = []

    /// Where the window starting at `start` is in `windows` (kept in order of start), made
    /// with `make` and inserted in its place when there is none. `hint`, where the last one
    /// was, is checked first (a batch of one partition's records stays in one window) and is
    /// set to the answer.
    @inline(__always)
    static func window<W: OpenWindowStart>(
        at start: Int64, in windows: inout [W], hint: inout Int, make: (Int64) -> W
    ) -> (index: Int, inserted: Bool) {
        if hint < windows.count, windows[hint].start == start { return (hint, false) }
        var i = windows.count - 1
        while i >= 0, windows[i].start > start { i -= 1 }
        var inserted = false
        if i < 0 || windows[i].start != start {
            i += 1
            windows.insert(make(start), at: i)
            inserted = true
        }
        hint = i
        return (i, inserted)
    }
    /// The dimensions some group uses, and the sample in hand's values and hashes of them
    /// (by `CohortDimension.ordinal`), reused from sample to sample.
    let usedDimensions: [CohortDimension]
    var sampleValues = [String?](repeating: nil, count: CohortDimension.allCases.count)
    var sampleHashes = [Int](repeating: 0, count: CohortDimension.allCases.count)
    /// The sample's own text of the edge and content (before `value` bounds it).
    var sampleRaw = [String?](repeating: nil, count: CohortDimension.allCases.count)
    /// Each group's cohort for the values in `sampleValues` (-1: not looked up since they changed).
    var lastSlots: [Int]
    /// The group with every dimension the others use (`[edge_location, content_id]` of the
    /// defaults), when there is one: a sample is counted only in its cohort of this group, and
    /// the wider groups' windows are summed from those when a window closes (one window update
    /// per sample instead of one per group). Nil: every group counts each sample itself.
    let finest: Int?
    /// Cohort hash -> slot in `cohorts` (the sessions' open-addressing table).
    var index = SessionTable()
    var freeIndices: [Int] = []

    public init(rules: CohortRules, startupCriticalMs: Int64 = 5_000) {
        self.rules = rules
        self.startupCriticalMs = startupCriticalMs
        let used = CohortDimension.allCases.filter { d in rules.groups.contains { $0.contains(d) } }
        usedDimensions = used
        lastSlots = Array(repeating: -1, count: rules.groups.count)
        finest = rules.groups.count > 1 ? rules.groups.firstIndex { group in used.allSatisfy(group.contains) } : nil
    }

    public init(rules: DetectionRules) {
        self.init(rules: rules.cohorts, startupCriticalMs: rules.startupDelay.criticalMs)
    }

    /// Counts a sample the engine took (`observation` is the engine's `lastObservation`) in its
    /// window. Windows close in `advance`; beyond `cohorts.max_open_windows` open ones, the
    /// oldest closes here, and its findings are appended.
    public mutating func observe(_ sample: Sample, _ observation: SessionObservation?, into findings: inout [Finding]) {
        guard rules.enabled, let observation else { return }
        let start = Self.floor(sample.time, rules.windowMs)
        guard start >= closedThrough else {
            statistics.lateSamples += 1
            return
        }
        var (w, inserted) = Self.window(at: start, in: &open, hint: &lastOpenIndex) { OpenWindow(start: $0) }
        if inserted, open.count > rules.maxOpenWindows {
            closeOldest(into: &findings)
            w -= 1
            if w < 0 { return }  // it was the oldest: closed with it
            lastOpenIndex = w
        }
        let status = UInt8(clamping: (sample.httpStatus ?? 0) / 100)
        let (bitrate, throughput) = (observation.bitrateKbps, observation.throughputKbps)
        // Each dimension's value and hash once per sample, whatever the groups; a value equal
        // to the previous sample's keeps its hash (an edge's requests come in runs).
        var changed = false
        for dimension in usedDimensions {
            // The parser shares one string per edge (and the same title comes in runs): the
            // same string as the previous sample's is the same value, found without a look.
            let raw = dimension == .edgeLocation ? sample.edgeLocation : dimension == .contentID ? sample.contentID : nil
            if raw != nil, raw == sampleRaw[dimension.ordinal] { continue }
            sampleRaw[dimension.ordinal] = raw
            let value = Self.value(dimension, of: sample)
            if value != sampleValues[dimension.ordinal] {
                sampleValues[dimension.ordinal] = value
                sampleHashes[dimension.ordinal] = value?.hashValue ?? 0
                changed = true
            }
        }
        if changed { lastSlots.withUnsafeMutableBufferPointer { $0.update(repeating: -1) } }
        // In its finest cohort only, when it has one (the wider ones are summed at close);
        // otherwise (a dimension missing, or the table full) in each group it belongs to.
        let finestSlot = finest.flatMap { cohort(group: $0, at: start) }
        if finestSlot == nil {
            // Every sample counts overall: those of a finest cohort when its window closes.
            open[w].overall.add(sample, observation, statusClass: status)
            open[w].overall.addMedia(bitrate: bitrate, throughput: throughput)
        }
        for group in rules.groups.indices where finestSlot == nil || group == finest {
            guard let slot = group == finest ? finestSlot : cohort(group: group, at: start) else { continue }
            cohorts.withUnsafeMutableBufferPointer { cohorts in
                let cohort = cohorts.baseAddress! + slot
                let i = Self.window(at: start, in: &cohort.pointee.open, hint: &cohort.pointee.lastOpenIndex) { start in
                    var window = CohortWindow()
                    window.start = start
                    return window
                }.index
                cohort.pointee.open[i].add(sample, observation, statusClass: status)
                cohort.pointee.open[i].addMedia(bitrate: bitrate, throughput: throughput)
                if cohort.pointee.lastActiveWindow < start { cohort.pointee.lastActiveWindow = start }
            }
        }
    }

    /// Closes the windows that ended at or before `watermark`: the event time every input has
    /// reached (the slowest partition's, in a daemon; the stream's less the reorder tolerance,
    /// for a file). An open incident is judged on empty windows when no sample comes.
    public mutating func advance(to watermark: Int64, into findings: inout [Finding]) {
        guard rules.enabled else { return }
        while let first = open.first, first.start + rules.windowMs <= watermark { closeOldest(into: &findings) }
        // Nothing arrives, but incidents are open: they are judged (and resolve) all the same;
        // for incidents taken back at start with no sample since, from the window in hand on.
        if open.isEmpty, closedThrough == Int64.min, hasOpenIncidents { closedThrough = Self.floor(watermark, rules.windowMs) }
        guard open.isEmpty, closedThrough > Int64.min, hasOpenIncidents else { return }
        var windows = 0
        while closedThrough + rules.windowMs <= watermark, hasOpenIncidents, windows < rules.maxOpenWindows {
            open.append(OpenWindow(start: closedThrough))
            closeOldest(into: &findings)
            windows += 1
        }
        if closedThrough + rules.windowMs <= watermark { closedThrough = Self.floor(watermark, rules.windowMs) }
    }

    /// Closes every open window (the end of a file).
    public mutating func finish(into findings: inout [Finding]) {
        guard rules.enabled else { return }
        while !open.isEmpty { closeOldest(into: &findings) }
    }

    var hasOpenIncidents: Bool { cohorts.contains { $0.ruleStates.contains { $0.phase != .inactive } } }

    /// Takes back incidents that were firing when the process stopped (the alerts table's
    /// open incident rows), so that they resolve, or go on, under the same id rather than
    /// firing twice or never resolving. Baselines start afresh. Returns how many were taken.
    /// What cannot be taken back is resolved at `time` (the findings appended), or its row
    /// would stay open for ever and fold every viewer's page of its scope: an incident of a
    /// rule or cohort group no longer configured (or with cohorts off), and a second open
    /// incident of a cohort and rule already taken back.
    @discardableResult
    public mutating func restore(_ incidents: [OpenIncident], at time: Int64, into findings: inout [Finding]) -> Int {
        var restored = 0
        for incident in incidents {
            func retire(_ resolution: String, _ reason: String) {
                emit(incident.retired(at: time, resolution: resolution, because: reason), into: &findings)
            }
            guard rules.enabled, let r = rules.incidents.firstIndex(where: { $0.name == incident.rule }) else {
                retire("not_configured", "its rule is no longer configured")
                continue
            }
            let dimensions = incident.scope.map(\.dimension).sorted()
            guard let group = rules.groups.firstIndex(of: dimensions) else {
                retire("not_configured", "its cohort group is no longer configured")
                continue
            }
            let byDimension = Dictionary(incident.scope.map { ($0.dimension, $0.value) }, uniquingKeysWith: { a, _ in a })
            for dimension in dimensions {
                sampleValues[dimension.ordinal] = byDimension[dimension]
                sampleHashes[dimension.ordinal] = byDimension[dimension]?.hashValue ?? 0
                sampleRaw[dimension.ordinal] = nil
            }
            let window = Self.floor(incident.startedAt, rules.windowMs)
            // The values are the incident's, not the last sample's: no cached cohort applies.
            for g in lastSlots.indices { lastSlots[g] = -1 }
            guard let slot = findOrMakeCohort(group: group, at: window) else {
                retire("not_tracked", "its cohort is not tracked (cohorts.max_cohorts are live)")
                continue
            }
            var state = cohorts[slot].ruleStates[r]
            guard state.phase == .inactive else {
                retire("duplicate", "another open incident of the same cohort and rule goes on")
                continue
            }
            state.phase = .firing
            state.breachStartedAt = incident.startedAt
            cohorts[slot].ruleStates[r] = state
            restored += 1
        }
        return restored
    }


    static func floor(_ time: Int64, _ length: Int64) -> Int64 {
        let q = time / length
        return (time % length < 0 ? q - 1 : q) * length
    }

    // MARK: - Cohorts

    static func value(_ dimension: CohortDimension, of sample: Sample) -> String? {
        switch dimension {
        case .edgeLocation: return sample.edgeLocation.flatMap { $0.isEmpty || $0 == "-" ? nil : bounded($0) }
        case .contentID: return sample.contentID.flatMap { $0.isEmpty ? nil : bounded($0) }
        case .streamType: return sample.cmcd.streamType
        case .objectType: return sample.cmcd.objectType?.rawValue
        case .statusClass: return sample.httpStatus.map { "\($0 / 100)xx" }
        }
    }

    /// At most 256 bytes of a viewer's value (cut at a character boundary).
    static func bounded(_ text: String) -> String {
        guard text.utf8.count > 256 else { return text }
        var end = text.utf8.index(text.utf8.startIndex, offsetBy: 256)
        while end > text.utf8.startIndex, text.utf8[end] & 0xC0 == 0x80 { end = text.utf8.index(before: end) }
        return String(text[..<end])
    }

    /// The slot of the sample's cohort in `group`, made if new; nil when the sample lacks one
    /// of the group's dimensions or the table is full.
    mutating func cohort(group: Int, at window: Int64) -> Int? {
        // The same values as the previous sample: the same cohort.
        if lastSlots[group] >= 0 { return lastSlots[group] }
        guard let slot = findOrMakeCohort(group: group, at: window) else { return nil }
        lastSlots[group] = slot
        return slot
    }

    mutating func findOrMakeCohort(group: Int, at window: Int64) -> Int? {
        var hash = Self.seed(group)
        for dimension in rules.groups[group] {
            guard sampleValues[dimension.ordinal] != nil else { return nil }
            hash = Self.mix(hash, sampleHashes[dimension.ordinal])
        }
        if let slot = index.find(hash: UInt64(bitPattern: Int64(hash)), matches: { matchesSample(Int($0), group) }) { return Int(slot) }
        return makeCohort(group: group, values: rules.groups[group].map { sampleValues[$0.ordinal]! }, hash: hash, at: window)
    }

    /// A new cohort in a free slot; nil (counted) when `max_cohorts` are live.
    mutating func makeCohort(group: Int, values: [String], hash: Int, at window: Int64) -> Int? {
        guard statistics.liveCohorts < rules.maxCohorts else {
            statistics.cohortsRefused += 1
            return nil
        }
        let cohort = Cohort(
            group: group, values: values, hash: hash, lastActiveWindow: window,
            ruleStates: Array(repeating: RuleState(), count: rules.incidents.count))
        let slot: Int
        if let free = freeIndices.popLast() {
            slot = free
            cohorts[slot] = cohort
        } else {
            slot = cohorts.count
            cohorts.append(cohort)
        }
        index.insert(hash: UInt64(bitPattern: Int64(hash)), slot: Int32(slot))
        statistics.liveCohorts += 1
        return slot
    }

    /// Adds each finest cohort's window starting at `start` into the windows of the wider
    /// cohorts it belongs to (made when new, like a sample would), and into `overall`.
    mutating func sumFinestWindows(at start: Int64) {
        guard let finest else { return }
        let dimensions = rules.groups[finest]
        let children = cohorts.indices.filter { cohorts[$0].group == finest && !cohorts[$0].values.isEmpty && cohorts[$0].open.first?.start == start }
        for child in children {
            let window = cohorts[child].open[0]
            overall.merge(window)
            for group in rules.groups.indices where group != finest {
                let values = rules.groups[group].map { cohorts[child].values[dimensions.firstIndex(of: $0)!] }
                guard let parent = findOrMakeCohort(group: group, values: values, at: start) else { continue }
                if cohorts[parent].open.first?.start != start {
                    var empty = CohortWindow()
                    empty.start = start
                    cohorts[parent].open.insert(empty, at: 0)
                }
                cohorts[parent].open[0].merge(window)
                if cohorts[parent].lastActiveWindow < start { cohorts[parent].lastActiveWindow = start }
            }
        }
    }

    /// `findOrMakeCohort` for given values (not the sample's).
    mutating func findOrMakeCohort(group: Int, values: [String], at window: Int64) -> Int? {
        var hash = Self.seed(group)
        for value in values { hash = Self.mix(hash, value.hashValue) }
        if let slot = index.find(hash: UInt64(bitPattern: Int64(hash)), matches: { cohorts[Int($0)].group == group && cohorts[Int($0)].values == values }) {
            return Int(slot)
        }
        return makeCohort(group: group, values: values, hash: hash, at: window)
    }

    /// A cohort's hash: its group, then each dimension value's hash, mixed.
    static func seed(_ group: Int) -> Int { (group &+ 1) &* -7_046_029_254_386_353_131 }
    static func mix(_ hash: Int, _ value: Int) -> Int { (hash ^ value) &* 1_099_511_628_211 &+ 0x2545_F491 }

    private func matchesSample(_ slot: Int, _ group: Int) -> Bool {
        guard cohorts[slot].group == group else { return false }
        var i = 0
        for dimension in rules.groups[group] {
            if sampleValues[dimension.ordinal] != cohorts[slot].values[i] { return false }
            i += 1
        }
        return true
    }

    func scope(of cohort: Cohort) -> [(CohortDimension, String)] {
        Array(zip(rules.groups[cohort.group], cohort.values))
    }

    /// Whether `narrow` refines `wide`: every dimension of `wide` is in `narrow` with the same value.
    func refines(_ narrow: Cohort, _ wide: Cohort) -> Bool {
        let wideDimensions = rules.groups[wide.group]
        let narrowDimensions = rules.groups[narrow.group]
        guard narrowDimensions.count > wideDimensions.count else { return false }
        for (dimension, value) in zip(wideDimensions, wide.values) {
            guard let at = narrowDimensions.firstIndex(of: dimension), narrow.values[at] == value else { return false }
        }
        return true
    }

    // MARK: - Closing a window

    private mutating func closeOldest(into findings: inout [Finding]) {
        guard !open.isEmpty else { return }
        let closing = open.removeFirst()
        let start = closing.start
        let end = start + rules.windowMs
        closedThrough = max(closedThrough, end)
        overall = closing.overall
        sumFinestWindows(at: start)
        for slot in cohorts.indices where cohorts[slot].open.first.map({ $0.start <= start }) ?? false {
            var window = cohorts[slot].open.removeFirst()
            guard window.start == start else { continue }
            window.startups.sort()  // every rule's percentile reads them sorted
            cohorts[slot].window = window
            if collectsRollups { rollups.append(CohortRollup(scope: scope(of: cohorts[slot]), window: window)) }
        }
        statistics.windowsClosed += 1
        var firing: [(slot: Int, rule: Int)] = []
        var resolved: [(slot: Int, rule: Int)] = []
        for slot in cohorts.indices where !cohorts[slot].values.isEmpty {
            for (r, rule) in rules.incidents.enumerated() {
                switch judge(slot: slot, rule: rule, r: r, start: start, end: end) {
                case .fire: firing.append((slot, r))
                case .resolve: resolved.append((slot, r))
                case nil: break
                }
            }
        }
        // Resolves first (an episode that ends and one that starts in one window stay in order).
        for (slot, r) in resolved {
            let folded = cohorts[slot].ruleStates[r].folded
            cohorts[slot].ruleStates[r].folded = false
            if !folded { emit(incident(slot, r, status: .resolved, at: end), into: &findings) }
        }
        emitFiring(firing, at: end, into: &findings)
        // Start the next window; forget cohorts long idle with nothing open.
        overall = CohortWindow()
        for slot in cohorts.indices where !cohorts[slot].values.isEmpty {
            cohorts[slot].window = CohortWindow()
            let idle = (start - cohorts[slot].lastActiveWindow) / rules.windowMs >= Int64(rules.idleWindows)
            if idle, cohorts[slot].ruleStates.allSatisfy({ $0.phase == .inactive }) { forget(slot) }
        }
    }

    private enum Transition { case fire, resolve }

    /// Judges one cohort's closing window for one rule and moves its state.
    private mutating func judge(slot: Int, rule: CohortRules.Incident, r: Int, start: Int64, end: Int64) -> Transition? {
        let window = cohorts[slot].window
        var state = cohorts[slot].ruleStates[r]
        defer { cohorts[slot].ruleStates[r] = state }
        let judged = window.population(for: rule) >= rules.minSessions && window.sessions >= rules.minSessions
        let value = judged ? window.value(of: rule.metric) : nil
        var breach = false
        if let value {
            state.lastValue = value
            breach = isBreach(value, rule, state)
        }
        // The baseline learns from windows that are not part of an episode.
        if let value, !breach, state.phase == .inactive {
            let alpha = 2 / (Double(rules.baselineWindows) + 1)
            if state.baselineWindows == 0 {
                state.baselineMean = value
            } else {
                let delta = value - state.baselineMean
                state.baselineMean += alpha * delta
                state.baselineVariance = (1 - alpha) * (state.baselineVariance + alpha * delta * delta)
            }
            state.baselineWindows += 1
        }
        switch state.phase {
        case .inactive, .pending:
            guard breach else {
                state.phase = .inactive
                return nil
            }
            if state.phase == .inactive {
                state.phase = .pending
                state.breachStartedAt = start
            }
            guard end - state.breachStartedAt >= max(rule.forMs, rules.windowMs) else { return nil }
            state.phase = .firing
            return .fire
        case .firing, .resolving:
            // A window from before the episode began (re-read after a restart that had no
            // checkpoint to start from) says nothing about it.
            if start < state.breachStartedAt { return nil }
            if breach {
                state.phase = .firing
                return nil
            }
            if state.phase == .firing {
                state.phase = .resolving
                state.clearSince = start
            }
            guard end - state.clearSince >= rule.resolveAfterMs else { return nil }
            state.phase = .inactive
            return .resolve
        }
    }

    func isBreach(_ value: Double, _ rule: CohortRules.Incident, _ state: RuleState) -> Bool {
        if let above = rule.above, !(value > above) { return false }
        if let sigmas = rule.deviationSigmas {
            guard state.baselineWindows >= rules.baselineWarmupWindows else { return false }
            // A floor on the deviation, so that a perfectly flat baseline does not make any
            // wobble an incident.
            let deviation = max(state.baselineVariance.squareRoot(), abs(state.baselineMean) * 0.05, 1e-6)
            guard value > state.baselineMean + sigmas * deviation else { return false }
        }
        return true
    }

    /// Root cause. Of the cohorts that start firing in a window for one rule, each is
    /// reported unless a cohort already reported explains it: it lies inside that cohort, or
    /// at least 80% of its affected sessions are in both (the cohort of the two together says
    /// so). A wider cohort gives way to a narrower one inside it that explains 80% of it.
    /// So an edge outage is one incident on the edge, not one per content on it, and a broken
    /// title is one incident on the title, not one per edge.
    private mutating func emitFiring(_ firing: [(slot: Int, rule: Int)], at end: Int64, into findings: inout [Finding]) {
        for r in rules.incidents.indices {
            let rule = rules.incidents[r]
            let starting = firing.filter { $0.rule == r }.map(\.slot)
            guard !starting.isEmpty else { continue }
            // Already reported and still open: they explain first.
            var reported = cohorts.indices.filter { slot in
                !starting.contains(slot) && !cohorts[slot].values.isEmpty && !cohorts[slot].ruleStates[r].folded
                    && [.firing, .resolving].contains(cohorts[slot].ruleStates[r].phase)
            }
            let candidates = starting.sorted {
                let (a, b) = (cohorts[$0].window.affected(by: rule), cohorts[$1].window.affected(by: rule))
                return a != b ? a > b : rules.groups[cohorts[$0].group].count < rules.groups[cohorts[$1].group].count
            }
            for slot in candidates {
                let own = cohorts[slot].window.affected(by: rule)
                let explained = reported.contains { explains($0, slot, r: r, rule: rule) }
                let narrower = candidates.contains { other in
                    other != slot && refines(cohorts[other], cohorts[slot]) && own > 0 && Double(cohorts[other].window.affected(by: rule)) >= 0.8 * Double(own)
                }
                if explained || narrower {
                    cohorts[slot].ruleStates[r].folded = true
                    statistics.incidentsFolded += 1
                    continue
                }
                reported.append(slot)
                statistics.incidentsFired += 1
                emit(incident(slot, r, status: .firing, at: end), into: &findings)
            }
        }
    }

    /// Whether the cohort in `wide` explains `slot`'s affected sessions.
    func explains(_ wide: Int, _ slot: Int, r: Int, rule: CohortRules.Incident) -> Bool {
        if refines(cohorts[slot], cohorts[wide]) { return true }
        let own = cohorts[slot].window.affected(by: rule)
        guard own > 0, let both = intersection(wide, slot) else { return false }
        return Double(cohorts[both].window.affected(by: rule)) >= 0.8 * Double(own)
    }

    /// The tracked cohort of both cohorts' dimensions together (nil when that group is not
    /// configured, the two disagree on a dimension, or it has no records).
    func intersection(_ a: Int, _ b: Int) -> Int? {
        var values: [CohortDimension: String] = [:]
        for (dimension, value) in scope(of: cohorts[a]) + scope(of: cohorts[b]) {
            if let seen = values[dimension], seen != value { return nil }
            values[dimension] = value
        }
        let dimensions = values.keys.sorted()
        guard let group = rules.groups.firstIndex(of: dimensions) else { return nil }
        return slot(group: group, values: dimensions.map { values[$0]! })
    }

    /// The live cohort of `group` with these values.
    func slot(group: Int, values: [String]) -> Int? {
        var hash = Self.seed(group)
        for value in values { hash = Self.mix(hash, value.hashValue) }
        return index.find(hash: UInt64(bitPattern: Int64(hash))) { cohorts[Int($0)].group == group && cohorts[Int($0)].values == values }.map(Int.init)
    }

    private mutating func emit(_ finding: Finding, into findings: inout [Finding]) {
        statistics.findings[.init(type: finding.type, severity: finding.severity, status: finding.status), default: 0] += 1
        findings.append(finding)
    }

    /// The incident finding of a cohort and rule.
    func incident(_ slot: Int, _ r: Int, status: FindingStatus, at end: Int64) -> Finding {
        let cohort = cohorts[slot]
        let rule = rules.incidents[r]
        let state = cohort.ruleStates[r]
        let scope = scope(of: cohort)
        let scopeText = Self.scopeText(scope)
        let window = cohort.window
        let affected = window.affected(by: rule)
        let overallAffected = overall.affected(by: rule)
        let value = state.lastValue ?? 0
        var details: [(key: String, value: JSONValue)] = [
            ("rule", .string(rule.name)),
            ("metric", .string(rule.metric.rawValue)),
            ("scope", .object(scope.map { ($0.0.rawValue, .string($0.1)) })),
            ("value", .double(Self.rounded(value))),
            ("threshold", rule.above.map { .double($0) } ?? .null),
            (
                "baseline",
                state.baselineWindows >= rules.baselineWarmupWindows
                    ? .object([
                        ("mean", .double(Self.rounded(state.baselineMean))),
                        ("deviation", .double(Self.rounded(state.baselineVariance.squareRoot()))),
                        ("windows", .int(Int64(state.baselineWindows))),
                    ]) : .null
            ),
            ("affected_sessions", .int(Int64(affected))),
            ("total_sessions", .int(Int64(window.sessions))),
            ("explains_share", .double(overallAffected > 0 ? Self.rounded(min(Double(affected) / Double(overallAffected), 1)) : 0)),
            ("top_sessions", .array(window.exampleSessions.map(JSONValue.string))),
            ("window_ms", .int(rules.windowMs)),
        ]
        if status == .resolved { details.append(("resolution", .string("below_threshold"))) }
        let what = rule.metric.rawValue.replacingUnderscoresWithSpaces
        let summary =
            status == .firing
            ? "Incident \(rule.name) on \(scopeText): \(what) \(Self.rounded(value))\(rule.above.map { " above \($0)" } ?? " above its baseline"), \(affected) of \(window.sessions) sessions affected"
            : "Incident \(rule.name) on \(scopeText) resolved: \(what) back to \(Self.rounded(value))"
        return Self.incidentFinding(
            rule: rule.name, scope: scope, status: status, severity: rule.severity, startedAt: state.breachStartedAt, detectedAt: end,
            summary: summary, details: details)
    }

    /// A cohort's scope as incidents write it (`edge_location=FRA56-C2,content_id=...`).
    static func scopeText(_ scope: [(dimension: CohortDimension, value: String)]) -> String {
        scope.map { "\($0.dimension.rawValue)=\($0.value)" }.joined(separator: ",")
    }

    /// An incident finding of `rule` on `scope`: its id made of both and its start (the same
    /// for every finding of the episode), the scope's edge and content as its own.
    static func incidentFinding(
        rule: String, scope: [(dimension: CohortDimension, value: String)], status: FindingStatus, severity: Severity, startedAt: Int64,
        detectedAt: Int64, summary: String, details: [(key: String, value: JSONValue)]
    ) -> Finding {
        var finding = Finding(
            type: .incident, status: status, severity: severity, sessionID: "",
            contentID: scope.first { $0.dimension == .contentID }?.value, edgeLocation: scope.first { $0.dimension == .edgeLocation }?.value,
            startedAt: startedAt, detectedAt: detectedAt, summary: summary, details: details)
        finding.id = FindingID.make(sessionID: "incident\u{0}\(rule)\u{0}\(scopeText(scope))", type: .incident, startedAt: startedAt)
        return finding
    }

    static func rounded(_ value: Double) -> Double { (value * 10_000).rounded() / 10_000 }

    private mutating func forget(_ slot: Int) {
        for g in lastSlots.indices where lastSlots[g] == slot { lastSlots[g] = -1 }
        index.remove(hash: UInt64(bitPattern: Int64(cohorts[slot].hash)), slot: Int32(slot))
        cohorts[slot] = Cohort(group: 0, values: [], hash: 0, ruleStates: [])
        freeIndices.append(slot)
        statistics.liveCohorts -= 1
        statistics.cohortsForgotten += 1
    }
}

/// An incident the alerts table holds as firing: what `CohortTracker.restore` needs.
public struct OpenIncident: Sendable, Equatable {
    public var rule: String
    public var scope: [(dimension: CohortDimension, value: String)]
    public var startedAt: Int64
    /// Its finding id (the row's), when known: what resolves it if it is not taken back.
    public var id: String?
    public var severity: Severity

    public init(rule: String, scope: [(dimension: CohortDimension, value: String)], startedAt: Int64, id: String? = nil, severity: Severity = .critical) {
        self.rule = rule
        self.scope = scope
        self.startedAt = startedAt
        self.id = id
        self.severity = severity
    }

    /// From an incident finding's `details` (`rule`, `scope`); nil when they are not there.
    public init?(details: JSONValue, startedAt: Int64, id: String? = nil, severity: Severity = .critical) {
        guard case .string(let rule)? = details["rule"], let members = details["scope"]?.objectMembers, !members.isEmpty else { return nil }
        var scope: [(dimension: CohortDimension, value: String)] = []
        for (key, value) in members {
            guard let dimension = CohortDimension(rawValue: key), case .string(let text) = value else { return nil }
            scope.append((dimension, text))
        }
        self.init(rule: rule, scope: scope, startedAt: startedAt, id: id, severity: severity)
    }

    /// The finding that resolves it at `time` without judging it, and why.
    func retired(at time: Int64, resolution: String, because reason: String) -> Finding {
        var finding = CohortTracker.incidentFinding(
            rule: rule, scope: scope, status: .resolved, severity: severity, startedAt: startedAt, detectedAt: max(time, startedAt),
            summary: "Incident \(rule) on \(CohortTracker.scopeText(scope)) resolved: \(reason)",
            details: [
                ("rule", .string(rule)), ("scope", .object(scope.map { ($0.dimension.rawValue, .string($0.value)) })),
                ("resolution", .string(resolution)),
            ])
        if let id { finding.id = id }
        return finding
    }

    public static func == (a: OpenIncident, b: OpenIncident) -> Bool {
        a.rule == b.rule && a.startedAt == b.startedAt && a.scope.map(\.dimension) == b.scope.map(\.dimension) && a.scope.map(\.value) == b.scope.map(\.value)
            && a.id == b.id && a.severity == b.severity
    }
}

/// One cohort's figures over one closed window: a point of the live QoE series.
public struct CohortRollup: Sendable {
    public var scope: [(dimension: CohortDimension, value: String)]
    public var window: CohortWindow

    public init(scope: [(dimension: CohortDimension, value: String)], window: CohortWindow) {
        self.scope = scope
        self.window = window
    }
}

/// A window kept in a list ordered by its start (see `CohortTracker.window(at:in:hint:make:)`).
protocol OpenWindowStart {
    var start: Int64 { get }
}
