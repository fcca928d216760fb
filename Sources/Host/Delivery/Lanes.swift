import Logging
import Synchronization

/// The destinations' lanes for the configuration in force, and which of them an operator suspended.
///
/// A lane is kept as long as its destination exists: a reload hands it the new settings and it keeps what it learned
/// (in flight, rate-limit windows, the breaker). Suspensions live in the store, shared by every instance; the copy here
/// is read again when the store announces a change, and at each maintenance pass.
final class Lanes: Sendable {
    private let runtime: RuntimeHolder
    private let store: any DeliveryQueue
    private let logger: Logger
    private let buckets = RateLimitBuckets()
    /// The lanes, by name and in name order, for the runtime generation they were built from.
    private let lanes = Mutex<(generation: Int, byName: [String: DestinationLane], ordered: [DestinationLane])>((-1, [:], []))
    /// The destinations an operator suspended, as last read from the store.
    private let suspended = Mutex<Set<String>>([])
    /// Set when the store announced a suspension or resumption, and at each maintenance pass: read them again.
    private let suspensionsStale = Atomic<Bool>(true)

    init(runtime: RuntimeHolder, store: any DeliveryQueue, logger: Logger) {
        self.runtime = runtime
        self.store = store
        self.logger = logger
    }

    /// The lanes of the destinations configured now, in name order. Rebuilt only when a reload replaced the runtime
    /// (every dispatch pass asks).
    func current() -> [DestinationLane] {
        let (runtime, generation) = self.runtime.versioned
        return lanes.withLock { lanes in
            guard lanes.generation != generation else { return lanes.ordered }
            let destinations = runtime.config.destinations
            for name in lanes.byName.keys where destinations[name] == nil { lanes.byName[name] = nil }
            lanes.ordered = destinations.values.sorted { $0.name < $1.name }.map { destination in
                if let lane = lanes.byName[destination.name] {
                    if lane.reconfigure(destination) {
                        logger.info("destination settings reloaded", metadata: ["destination": "\(destination.name)"])
                    }
                    return lane
                }
                let lane = DestinationLane(destination: destination, buckets: buckets, logger: logger)
                lane.setSuspended(suspended.withLock { $0.contains(destination.name) })
                lanes.byName[destination.name] = lane
                return lane
            }
            lanes.generation = generation
            return lanes.ordered
        }
    }

    /// The flow-control state of every configured destination, for the admin API.
    func snapshots() -> [DestinationLane.Snapshot] {
        let now = Clock.milliseconds()
        return current().map { $0.snapshot(now: now) }
    }

    /// Suspends or resumes `destination` for an operator, in the store first. Its state afterwards; nil when no such
    /// destination is configured.
    func setSuspended(_ suspend: Bool, destination: String) async throws -> DestinationLane.Snapshot? {
        guard let lane = current().first(where: { $0.name == destination }) else { return nil }
        try await store.setSuspended(suspend, destination: destination)
        suspended.withLock { names in
            if suspend { names.insert(destination) } else { names.remove(destination) }
        }
        lane.setSuspended(suspend)
        // A read of the suspensions that began before this write may land after it: read them once more.
        markSuspensionsStale()
        logger.notice(
            suspend ? "destination suspended by an operator" : "destination resumed by an operator",
            metadata: ["destination": "\(destination)"])
        return lane.snapshot()
    }

    /// The store said suspensions changed (or a maintenance pass is due): the next ``refreshSuspensions()`` reads them.
    func markSuspensionsStale() { suspensionsStale.store(true, ordering: .sequentiallyConsistent) }

    /// Reads the suspensions again when they may have changed, and applies them.
    func refreshSuspensions() async {
        guard suspensionsStale.exchange(false, ordering: .sequentiallyConsistent) else { return }
        let names: Set<String>
        do {
            names = try await store.suspendedDestinations()
        } catch {
            // Tried again at the next maintenance pass, not on every pass while the store is unreachable.
            logger.warning("cannot read which destinations are suspended", metadata: ["error": "\(error)"])
            return
        }
        suspended.withLock { $0 = names }
        for lane in current() where lane.setSuspended(names.contains(lane.name)) {
            logger.notice(
                names.contains(lane.name) ? "destination suspended by an operator" : "destination resumed by an operator",
                metadata: ["destination": "\(lane.name)"])
        }
    }
}
