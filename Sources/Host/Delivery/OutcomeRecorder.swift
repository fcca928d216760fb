import Logging
import Synchronization

/// Writes attempt outcomes to the store, many in one transaction (group commit), and holds the dispatcher back when
/// they are not being committed: at `maximumUncommitted` answered-but-unrecorded attempts nothing new starts, so a
/// store that cannot commit (a full disk, a lost database) stops sending instead of piling up answers in memory.
///
/// A delivery's task hands its outcome over and ends; the recorder runs what follows the commit (``Recorded``) and wakes
/// the dispatcher once per batch, marking the batch's destinations (decisions §46). A batch that cannot be recorded is
/// tried again every 500 ms until it is, or until ``giveUp()`` (shutdown); then its leases cover it and the deliveries
/// are sent again after restart (at least once, never lost).
///
/// While other attempts are being sent, a batch waits up to `gatherDelay` for their outcomes (decisions §38): a drain
/// otherwise commits about four outcomes per transaction, each with its fsync and its WAL pages.
final class OutcomeRecorder: Sendable {
    /// What runs once an outcome is recorded, or once the recorder gave up on it: the rest of its attempt (the alerts,
    /// the journal, the engine's count of attempts in flight).
    typealias Recorded = @Sendable () -> Void

    private struct Item: Sendable {
        var outcome: DeliveryOutcome
        var destination: String
        var recorded: Recorded
    }

    /// Shared with the writer's commit closure.
    private final class State: Sendable {
        /// Attempts started whose outcome has not been handed to ``record(_:of:then:)`` yet.
        let sending = Atomic<Int>(0)
        /// Outcomes handed over and not yet committed (or given up).
        let uncommitted = Atomic<Int>(0)
        /// Shutdown: stop trying a batch the store refuses.
        let givingUp = Atomic<Bool>(false)
    }

    private let writer: GroupCommitter<Item, Void>
    private let state = State()
    private let maximumUncommitted: Int

    init(
        store: any DeliveryQueue, wake: WakeSignal, maximumBatch: Int = 512, maximumUncommitted: Int,
        gatherDelay: Duration = .milliseconds(3), logger: Logger
    ) {
        let state = self.state
        let gathering = GroupCommitter<Item, Void>.Gathering(
            delay: gatherDelay, enough: 64, moreComing: { state.sending.load(ordering: .relaxed) > 0 })
        self.writer = GroupCommitter(maximumBatch: maximumBatch, gathering: gatherDelay > .zero ? gathering : nil) { batch in
            let recorded = await Self.commit(batch, store: store, logger: logger) {
                state.givingUp.load(ordering: .sequentiallyConsistent) || Task.isCancelled
            }
            state.uncommitted.subtract(batch.count, ordering: .sequentiallyConsistent)
            for item in batch { item.recorded() }
            // The dispatcher may start again (no longer backed up), and each destination may have a retry or the next in
            // a FIFO line to claim.
            if recorded { wake.signal(marking: Set(batch.lazy.map(\.destination))) } else { wake.signalCapacity() }
            return Array(repeating: (), count: batch.count)
        }
        self.maximumUncommitted = maximumUncommitted
    }

    /// Records `batch`, trying again every 500 ms while the store fails, until it is recorded (true) or `giveUp` says
    /// to stop (false).
    private static func commit(_ batch: [Item], store: any DeliveryQueue, logger: Logger, giveUp: () -> Bool) async -> Bool {
        var logged = false
        while true {
            do {
                try await store.record(batch.map(\.outcome))
                return true
            } catch {
                if !logged {
                    logger.error(
                        "attempt outcomes not recorded; retrying",
                        metadata: [
                            "count": "\(batch.count)", "delivery_ids": "\(batch.prefix(5).map(\.outcome.deliveryID))",
                            "destinations": "\(Set(batch.map(\.destination)).sorted())", "error": "\(error)",
                        ])
                    logged = true
                }
                if giveUp() { return false }
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    /// True while so many outcomes wait for their commit that nothing new should start.
    var isBackedUp: Bool { state.uncommitted.load(ordering: .sequentiallyConsistent) >= maximumUncommitted }

    /// The writer loop; returns after ``close()`` once everything submitted before it is committed (or given up).
    func run() async { await writer.run() }

    /// Stops taking outcomes once those queued are committed.
    func close() { writer.close() }

    /// Shutdown: a batch the store keeps refusing is given up after its current try instead of tried again.
    func giveUp() { state.givingUp.store(true, ordering: .sequentiallyConsistent) }

    /// An attempt starts; its outcome will come to ``record(_:of:then:)``.
    func attemptStarted() { state.sending.add(1, ordering: .relaxed) }

    /// Queues `outcome` for the next commit and returns; `recorded` runs once it is recorded or given up. Every
    /// attempt announced with ``attemptStarted()`` ends here.
    func record(_ outcome: DeliveryOutcome, of delivery: ClaimedDelivery, then recorded: @escaping Recorded) {
        state.sending.subtract(1, ordering: .relaxed)
        state.uncommitted.add(1, ordering: .sequentiallyConsistent)
        if !writer.enqueue(Item(outcome: outcome, destination: delivery.destination, recorded: recorded)) {
            // Closed: the engine has stopped; the lease covers the delivery.
            state.uncommitted.subtract(1, ordering: .sequentiallyConsistent)
            recorded()
        }
    }
}
