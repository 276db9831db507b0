#if canImport(Glibc)
import CMalloc
#endif

/// When the daemon gives the C allocator's free memory back to the system. An engine's
/// session table is an array that doubles as sessions arrive; glibc keeps each outgrown copy
/// below its mmap threshold (raised as large blocks are freed, up to 32 MiB) in its heap,
/// resident: at 300,000 live sessions that was about 40% of the daemon's memory per session.
/// Trimming each time the live sessions reach a quarter more than at the last trim releases
/// those copies (a few dozen times in a daemon's life), while the heap keeps reusing
/// librdkafka's fetch buffers without faulting in fresh pages for each.
struct AllocatorTrimming {
    private var nextTrimAt = 1_024

    /// Whether to trim now, with `liveSessions` live.
    mutating func shouldTrim(liveSessions: Int) -> Bool {
        guard liveSessions >= nextTrimAt else { return false }
        nextTrimAt = liveSessions + liveSessions / 4
        return true
    }

    /// Returns the free pages of every heap to the system (glibc's `malloc_trim`; nothing elsewhere).
    static func releaseFreeMemory() {
        #if canImport(Glibc)
        _ = CMalloc.malloc_trim(0)
        #endif
    }
}
