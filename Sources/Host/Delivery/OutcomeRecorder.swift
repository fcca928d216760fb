import Logging
import Synchronization

/// Writes attempt outcomes to the store, many in one transaction (group commit), and holds the dispatcher back when
/// they are not being committed: at `maximumUncommitted` answered-but-unrecorded attempts nothing new starts, so a
/// store that cannot commit (a full disk, a lost database) stops sending instead of piling up answers in memory.
///
/// An outcome that cannot be recorded is tried again until it is, or until shutdown; then its lease covers it and the
/// delivery is sent again after restart (at least once, never lost).
///
/// While other attempts are being sent, a batch waits up to `gatherDelay` for their outcomes (decisions §38): a drain
/// otherwise commits about four outcomes per transaction, each with its fsync and its WAL pages.
final class OutcomeRecorder: Sendable {
    /// Attempts started whose outcome has not been handed to ``record(_:of:giveUp:)`` yet.
    private final class Sending: Sendable {
        let count = Atomic<Int>(0)
    }

    private let writer: GroupCommitter<DeliveryOutcome, Void>
    private let uncommitted = Atomic<Int>(0)
    private let sending = Sending()
    private let maximumUncommitted: Int
    private let logger: Logger

    init(
        store: any DeliveryQueue, maximumBatch: Int = 512, maximumUncommitted: Int, gatherDelay: Duration = .milliseconds(3),
        logger: Logger
    ) {
        let sending = self.sending
        let gathering = GroupCommitter<DeliveryOutcome, Void>.Gathering(
            delay: gatherDelay, enough: 64, moreComing: { sending.count.load(ordering: .relaxed) > 0 })
        self.writer = GroupCommitter(maximumBatch: maximumBatch, gathering: gatherDelay > .zero ? gathering : nil) { batch in
            try await store.record(batch)
            return Array(repeating: (), count: batch.count)
        }
        self.maximumUncommitted = maximumUncommitted
        self.logger = logger
    }

    /// True while so many outcomes wait for their commit that nothing new should start.
    var isBackedUp: Bool { uncommitted.load(ordering: .sequentiallyConsistent) >= maximumUncommitted }

    /// The writer loop; returns after ``close()`` once everything submitted before it is committed.
    func run() async { await writer.run() }

    /// Stops taking outcomes once those queued are committed.
    func close() { writer.close() }

    /// An attempt starts; its outcome will come to ``record(_:of:giveUp:)``.
    func attemptStarted() { sending.count.add(1, ordering: .relaxed) }

    /// Records `outcome`, retrying every 500 ms while the store fails, until it is recorded or `giveUp` says the
    /// process is stopping. Every attempt announced with ``attemptStarted()`` ends here.
    func record(_ outcome: DeliveryOutcome, of delivery: ClaimedDelivery, giveUp: () -> Bool) async {
        sending.count.subtract(1, ordering: .relaxed)
        uncommitted.add(1, ordering: .sequentiallyConsistent)
        defer { uncommitted.subtract(1, ordering: .sequentiallyConsistent) }
        var logged = false
        while true {
            do {
                try await writer.submit(outcome)
                return
            } catch {
                if !logged {
                    logger.error(
                        "attempt outcome not recorded; retrying",
                        metadata: [
                            "event_id": "\(delivery.event.id)", "delivery_id": "\(delivery.id)", "destination": "\(delivery.destination)",
                            "error": "\(error)",
                        ])
                    logged = true
                }
                if giveUp() || Task.isCancelled { return }
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
    }
}
