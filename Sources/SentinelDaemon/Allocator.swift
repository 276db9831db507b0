#if canImport(Glibc)
import CMalloc
#endif

extension Daemon {
    /// Has the C allocator give large blocks back to the system when they are freed. glibc
    /// otherwise raises its mmap threshold after the first large free and keeps later large
    /// blocks in its heap, where each old copy of an engine's growing session table stays
    /// resident: at 300,000 live sessions that was about 40% of the daemon's memory per
    /// session. Blocks of 1 MiB and more (session tables, librdkafka's fetch buffers) are
    /// mapped and unmapped instead. Call once, before the daemon starts; nothing without glibc.
    public static func configureAllocator() {
        #if canImport(Glibc)
        _ = CMalloc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
        #endif
    }
}
