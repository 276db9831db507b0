#if canImport(Glibc)
import CMalloc
#endif

/// How the daemon sets up the C allocator (glibc's malloc) for the process it runs in.
///
/// Catching up on a backlog, librdkafka's broker thread fills the pre-fetch queue
/// (`queued.max.messages.kbytes`, 128 MiB by default) while the consume loop frees it from the
/// other end. With glibc's defaults the freed memory went back to the system (a heap's free
/// top beyond the trim threshold, a per-thread heap of 64 MiB emptied whole, blocks beyond
/// the dynamic mmap threshold) and was faulted in again as the queue refilled: about one page
/// fault per 4 KiB of records, two fifths of the broker thread's time. So:
///
/// - blocks of `mmapThreshold` (4 MiB) and more are mapped and unmapped: an engine's session
///   table doubles as sessions arrive, and its outgrown copies are given back at once, while
///   librdkafka's fetch buffers (a megabyte or so) stay in the heaps and are reused;
/// - a heap's free top is given back only beyond `trimThreshold`, the pre-fetch queue's size;
/// - `topPad` (64 MiB, a per-thread heap's size) keeps an emptied per-thread heap rather than
///   unmapping it, and pads each growth of the main heap by that much address space.
///
/// Process-wide; nothing elsewhere than glibc.
struct AllocatorSettings: Equatable {
    var mmapThreshold: Int
    var trimThreshold: Int
    var topPad: Int

    /// The settings for a daemon whose librdkafka pre-fetch queue holds up to `queueKilobytes`
    /// (nil: librdkafka's default, 64 MiB), kept between 16 MiB and 1 GiB.
    init(queueKilobytes: Int?) {
        mmapThreshold = 4 << 20
        trimThreshold = min(max((queueKilobytes ?? 65_536) * 1_024, 16 << 20), 1 << 30)
        topPad = 64 << 20
    }

    /// Applies the settings to the process (glibc's `mallopt`; nothing elsewhere).
    func apply() {
        #if canImport(Glibc)
        _ = CMalloc.mallopt(M_MMAP_THRESHOLD, Int32(mmapThreshold))
        _ = CMalloc.mallopt(M_TRIM_THRESHOLD, Int32(clamping: trimThreshold))
        _ = CMalloc.mallopt(M_TOP_PAD, Int32(topPad))
        #endif
    }
}

/// When the daemon gives the C allocator's free memory back to the system. An engine's
/// session table is an array that doubles as sessions arrive, and glibc keeps each outgrown
/// copy below the mmap threshold in its heap, resident: at 300,000 live sessions that was
/// about a quarter of the daemon's memory per session. Trimming each time the live sessions
/// reach a quarter more than at the last trim releases those copies (about a dozen times on the
/// way to 300,000). It also returns the free part of librdkafka's pre-fetch queue, which is
/// then faulted in again, so it starts at 16,384 live sessions: below that the copies are a
/// few megabytes and not worth it.
struct AllocatorTrimming {
    private var nextTrimAt = 16_384

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
