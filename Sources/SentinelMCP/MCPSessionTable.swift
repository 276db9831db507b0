/// The policy of the MCP HTTP server's sessions, with no IO: a bounded table of sessions, each
/// touched when used, expiring when idle (never while a request of it is in flight). The server
/// acts on what the methods return (the handles to close).
struct MCPSessionTable<Handle> {
    /// Most sessions held at once.
    let capacity: Int
    /// A session unused this long (and with nothing in flight) expires.
    let idleTimeoutMs: Int64

    private struct Entry {
        var handle: Handle
        var lastUsedMs: Int64
        var inFlight: Int
    }

    private var entries: [String: Entry] = [:]

    init(capacity: Int, idleTimeoutMs: Int64) {
        self.capacity = max(1, capacity)
        self.idleTimeoutMs = max(1, idleTimeoutMs)
    }

    var count: Int { entries.count }

    /// What `admit` decided.
    enum Admission {
        case admitted
        /// The table is full; the earliest a session can expire is `retryAfterMs` from now.
        case full(retryAfterMs: Int64)
    }

    /// Adds a new session if there is room; `expired` are the sessions expired to make it
    /// (the caller closes them) whether or not it was admitted.
    mutating func admit(_ id: String, handle: Handle, nowMs: Int64) -> (Admission, expired: [Handle]) {
        let expired = expire(nowMs: nowMs)
        guard entries.count < capacity else {
            let earliest = entries.values.filter { $0.inFlight == 0 }.map { $0.lastUsedMs + idleTimeoutMs - nowMs }.min()
            return (.full(retryAfterMs: max(1_000, earliest ?? idleTimeoutMs)), expired)
        }
        entries[id] = Entry(handle: handle, lastUsedMs: nowMs, inFlight: 1)
        return (.admitted, expired)
    }

    /// Starts a request of session `id`: its handle, or nil if there is no such session (unknown,
    /// ended or expired). Each successful `begin` needs one `end`.
    mutating func begin(_ id: String, nowMs: Int64) -> Handle? {
        guard var entry = entries[id] else { return nil }
        if entry.inFlight == 0, nowMs - entry.lastUsedMs >= idleTimeoutMs { return nil }
        entry.inFlight += 1
        entry.lastUsedMs = nowMs
        entries[id] = entry
        return entry.handle
    }

    /// Ends a request begun with `begin` or `admit`.
    mutating func end(_ id: String, nowMs: Int64) {
        guard var entry = entries[id] else { return }
        entry.inFlight = max(0, entry.inFlight - 1)
        entry.lastUsedMs = nowMs
        entries[id] = entry
    }

    /// Removes session `id` (the client ended it, or it failed to initialize).
    mutating func remove(_ id: String) -> Handle? { entries.removeValue(forKey: id)?.handle }

    /// Removes and returns the sessions idle for the timeout.
    mutating func expire(nowMs: Int64) -> [Handle] {
        let idle = entries.filter { $0.value.inFlight == 0 && nowMs - $0.value.lastUsedMs >= idleTimeoutMs }
        for id in idle.keys { entries.removeValue(forKey: id) }
        return idle.values.map(\.handle)
    }

    /// Removes and returns every session (shutdown).
    mutating func removeAll() -> [Handle] {
        defer { entries.removeAll() }
        return entries.values.map(\.handle)
    }
}
