import HostShims
import ServiceLifecycle

/// How the server uses glibc's allocator (decisions §35).
///
/// By default glibc hands the free memory at the top of a thread's arena back to the kernel as soon as it passes
/// 128 KiB, and the next allocations fault the same pages in again. A delivery frees and reallocates that much on every
/// few attempts (the claim's rows, the request, the answer, the outcome batch), so a drain spent about 8% of the
/// server's CPU in `madvise`, TLB shootdowns and page faults. The server keeps up to ``trimThreshold`` free at the top
/// of each arena instead (at most 4 MiB per arena is held after a burst), and ``MemoryTrimmer`` gives back every few
/// seconds the free memory between blocks in use, which no free ever returns. (glibc's `malloc_trim` does not shrink a
/// thread arena's top; the threshold bounds that.)
enum Allocator {
    /// Free memory an arena keeps at its top before giving it back (glibc's `M_TRIM_THRESHOLD`).
    static let trimThreshold = 4 << 20
    /// Requests from this size up get their own mapping (glibc's `M_MMAP_THRESHOLD`; setting the trim threshold stops
    /// glibc adjusting it, so it is set too: a 1 MiB request body stays in the arenas).
    static let mmapThreshold = 1 << 20

    /// Applies the thresholds to this process. False when the C library is not glibc or refused them.
    @discardableResult
    static func tuneForServer() -> Bool { hp_malloc_tune(trimThreshold, mmapThreshold) == 0 }

    /// Gives the free pages between blocks in use in every arena, and the main arena's free top, back to the kernel.
    /// True when some was released.
    @discardableResult
    static func trim() -> Bool { hp_malloc_trim() == 1 }

    /// Unmaps from the process the code and constant data it has touched so far (the executable's and the shared
    /// libraries' segments without write permission, unless one holds a page copied on write;
    /// ``hp_unmap_readonly_segments``), for the server to call once it has started: reading the configuration,
    /// migrating the store, probing plugins and binding listeners touch several megabytes of code that serving never
    /// runs again, and the kernel maps 64 KiB around each page a fault reads. What serving uses is mapped again on its first use, from the page cache (a minor fault, no
    /// disk read); the page cache, shared with every other process, is not changed. Returns the bytes of the mappings
    /// released (most of them were not resident), or nil when `/proc/self/pagemap` cannot be read.
    @discardableResult
    static func releaseStartupPages() -> Int? {
        let released = hp_unmap_readonly_segments()
        return released < 0 ? nil : Int(released)
    }
}

/// Gives the allocator's free memory back to the kernel every `interval` (``Allocator/trim()``): the fragments a burst
/// left are returned within seconds of its end. With `started`, once it finishes (the listeners are bound), the pages
/// of code and data only starting used are released too (``Allocator/releaseStartupPages()``), once.
struct MemoryTrimmer: Service {
    var interval: Duration = .seconds(10)
    var started: AsyncStream<Void>?

    func run() async throws {
        if let started {
            await cancelWhenGracefulShutdown { for await _ in started {} }
            guard !Task.isShuttingDownGracefully, !Task.isCancelled else { return }
            Allocator.trim()
            Allocator.releaseStartupPages()
        }
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            } catch {
                return
            }
            Allocator.trim()
        }
    }
}
