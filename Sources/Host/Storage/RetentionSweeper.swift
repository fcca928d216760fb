import Logging
import ServiceLifecycle

/// Purges finished events (with their deliveries and attempts) older than `storage.retention`, in small batches so a
/// purge never holds the write lock for long and ingest is never blocked behind it. Idempotency keys live with their
/// events, so they are kept exactly as long as retention.
struct RetentionSweeper: Service {
    let store: any StoreMaintenance
    let runtime: RuntimeHolder
    let logger: Logger
    var interval: Duration = .seconds(60)
    var batch = 500

    func run() async throws {
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            await sweep()
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            } catch {
                return
            }
        }
    }

    /// One full pass; returns how many events were purged.
    @discardableResult
    func sweep() async -> Int {
        let retention = runtime.runtime.config.storage.retention
        let cutoff = Clock.milliseconds().subtractingSaturated(retention.wholeMilliseconds)
        var total = 0
        do {
            while !Task.isShuttingDownGracefully, !Task.isCancelled {
                let purged = try await store.purge(receivedBefore: cutoff, limit: batch)
                total += purged
                if purged < batch { break }
                await Task.yield()
            }
        } catch {
            // Shutdown cancels a purge in progress: not a failure.
            if Task.isCancelled { return total }
            logger.error("retention sweep failed", metadata: ["error": "\(error)"])
        }
        if total > 0 { logger.info("purged events past retention", metadata: ["count": "\(total)", "retention": "\(retention)"]) }
        return total
    }
}
