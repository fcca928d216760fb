import AsyncHTTPClient
import Logging
import ServiceLifecycle
import Synchronization

/// The delivery engine: the store is the queue. Due deliveries are claimed in batches with a lease, attempted
/// concurrently, and their outcomes written back in batches (group commit again).
///
/// Ingest wakes the engine directly; a timer wakes it for the earliest scheduled retry, and at most `idlePoll` passes
/// between looks at the store so that work added by other processes (`hookproxy replay` with no server running, say)
/// is picked up. On start every delivery left in flight by a previous process is released; on graceful shutdown the
/// engine stops claiming, lets attempts in flight finish for `shutdownGrace`, releases the rest, and flushes outcomes.
final class DeliveryEngine: Service, Sendable {
    /// Tuning; the defaults suit a single node.
    struct Configuration: Sendable {
        /// The most attempts in flight at once, across destinations.
        var maximumInFlight = 128
        /// The most deliveries claimed per query.
        var claimBatch = 64
        /// How long a claim holds a delivery; must exceed the longest destination timeout.
        var lease: Duration = .seconds(300)
        /// The longest the engine sleeps without looking at the store.
        var idlePoll: Duration = .seconds(1)
        /// How long in-flight attempts may finish at shutdown before they are cancelled and released.
        var shutdownGrace: Duration = .seconds(10)
        /// How often expired leases are released and retention is applied.
        var maintenanceInterval: Duration = .seconds(60)
    }

    private let store: any EventStore
    private let runtime: RuntimeHolder
    private let sender: DeliverySender
    private let wake: WakeSignal
    private let logger: Logger
    private let configuration: Configuration
    private let stopping = Atomic<Bool>(false)
    private let inFlight = Atomic<Int>(0)

    init(
        store: any EventStore, runtime: RuntimeHolder, httpClient: HTTPClient, wake: WakeSignal, logger: Logger,
        configuration: Configuration = Configuration()
    ) {
        self.store = store
        self.runtime = runtime
        self.sender = DeliverySender(httpClient: httpClient, logger: logger)
        self.wake = wake
        self.logger = logger
        self.configuration = configuration
    }

    func run() async throws {
        let released = try await store.releaseAllInFlight()
        if released > 0 { logger.info("resuming deliveries left in flight by the previous run", metadata: ["count": "\(released)"]) }

        let store = self.store
        let outcomes = GroupCommitter<DeliveryOutcome, Void>(maximumBatch: 512) { batch in
            try await store.record(batch)
            return Array(repeating: (), count: batch.count)
        }
        async let writerFinished: Void = outcomes.run()
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                await dispatch(into: &group, outcomes: outcomes)
            }
        } onGracefulShutdown: {
            self.stopping.store(true, ordering: .sequentiallyConsistent)
            self.wake.signal()
        }
        outcomes.close()
        await writerFinished
        logger.info("delivery engine stopped")
    }

    private func dispatch(into group: inout DiscardingTaskGroup, outcomes: GroupCommitter<DeliveryOutcome, Void>) async {
        let clock = ContinuousClock()
        var nextMaintenance = clock.now
        while !stopping.load(ordering: .sequentiallyConsistent) {
            if clock.now >= nextMaintenance {
                await maintain()
                nextMaintenance = clock.now + configuration.maintenanceInterval
            }
            var timeout = configuration.idlePoll
            let capacity = configuration.maximumInFlight - inFlight.load(ordering: .sequentiallyConsistent)
            if capacity > 0 {
                let now = Clock.milliseconds()
                do {
                    let limit = min(capacity, configuration.claimBatch)
                    let claimed = try await store.claimDue(
                        now: now, limit: limit, leaseUntil: now + Int64(configuration.lease.seconds * 1000))
                    let runtime = self.runtime.runtime
                    for delivery in claimed {
                        inFlight.add(1, ordering: .sequentiallyConsistent)
                        group.addTask {
                            let outcome = await self.sender.attempt(delivery, runtime: runtime)
                            do {
                                try await outcomes.submit(outcome)
                            } catch {
                                // The lease expires and the delivery is attempted again: at least once, never lost.
                                self.logger.error(
                                    "attempt outcome not recorded",
                                    metadata: ["delivery_id": "\(delivery.id)", "error": "\(error)"])
                            }
                            self.inFlight.subtract(1, ordering: .sequentiallyConsistent)
                            self.wake.signal()
                        }
                    }
                    if claimed.count == limit { continue }
                    if let due = try await store.nextDueTime() {
                        timeout = min(timeout, .milliseconds(max(0, due - Clock.milliseconds())))
                    }
                } catch {
                    logger.error("cannot claim deliveries", metadata: ["error": "\(error)"])
                }
            }
            if timeout > .zero { await wake.wait(timeout: timeout) }
        }
        // Graceful shutdown: let attempts in flight finish, then cancel and release the rest.
        let deadline = clock.now + configuration.shutdownGrace
        while inFlight.load(ordering: .sequentiallyConsistent) > 0, clock.now < deadline {
            await wake.wait(timeout: .milliseconds(50))
        }
        if inFlight.load(ordering: .sequentiallyConsistent) > 0 {
            logger.warning(
                "cancelling attempts still in flight at shutdown; they will be retried",
                metadata: ["count": "\(inFlight.load(ordering: .sequentiallyConsistent))"])
            group.cancelAll()
        }
    }

    /// Releases expired leases and purges events past retention.
    private func maintain() async {
        let now = Clock.milliseconds()
        do {
            let released = try await store.releaseExpiredLeases(now: now)
            if released > 0 { logger.warning("released expired delivery leases", metadata: ["count": "\(released)"]) }
            let retention = runtime.runtime.config.storage.retention
            let purged = try await store.purge(receivedBefore: now - Int64(retention.seconds * 1000))
            if purged > 0 { logger.info("purged events past retention", metadata: ["count": "\(purged)"]) }
        } catch {
            logger.error("store maintenance failed", metadata: ["error": "\(error)"])
        }
    }
}
