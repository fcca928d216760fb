import Logging

/// The first step of delivery: on every wake, asks each destination's lane how many deliveries may start
/// (concurrency, rate limit, rate-limit window, circuit breaker, FIFO), claims only what may start now from the store
/// (with a lease), and starts them. One destination's state never delays another's deliveries.
///
/// A claim serves a lane's next few `maxConcurrency` deliveries, not one (decisions §27, §38): what is claimed ahead waits here
/// and starts as the lane's slots free up; it goes back to the store when the lane is held back (suspended, a closed
/// window, an open circuit) or its destination is removed. Ingest wakes the dispatcher directly; otherwise it wakes for
/// the earliest due delivery or lane change, and at least every `idlePoll`, so that work added by other processes is
/// picked up.
///
/// A destination whose claim found nothing is idle (``IdleLanes``): it is not asked again until a wake-up marks it
/// (work committed for it, an outcome recorded, anything from a plain signal), its next delivery falls due, or the
/// `idlePoll` passes. Without that, every wake-up (two per delivery, one per ingest commit) cost a claim transaction and
/// a read per idle destination: two idle destinations beside a busy one took a third of the drain's throughput
/// (decisions §45).
struct Dispatcher: Sendable {
    let store: any DeliveryQueue
    let lanes: Lanes
    let runtime: RuntimeHolder
    let recorder: OutcomeRecorder
    let wake: WakeSignal
    let formattedAhead: FormattedAhead
    let logger: Logger
    let configuration: DeliveryEngine.Configuration
    let metrics: HookproxyMetrics

    /// What the dispatcher asks the engine to run.
    enum Work {
        /// Formats a delivery claimed ahead while it waits for a slot (``FormattedAhead``).
        case format(ClaimedDelivery, PluginInstance)
        /// Attempts a delivery now: its lane gave it a slot.
        case attempt(ClaimedDelivery, DestinationLane, Runtime)
    }

    /// How many lanes' worth of deliveries (`max_concurrency` each) a claim takes beyond the free slots, and the most
    /// deliveries that is. One claim transaction then serves about `claimAhead` times a lane's concurrency: at one
    /// lane's worth, claims were a third of a drain's writer time (decisions §38).
    static let claimAhead = 4
    static let claimAheadLimit = 64

    /// Starts deliveries (and the formatting of those claimed ahead) with `start` until `stopping` says to stop; then
    /// returns what it claimed ahead to the store.
    func run(stopping: () -> Bool, start: (Work) -> Void) async {
        let clock = ContinuousClock()
        let maintenanceInterval = min(configuration.maintenanceInterval, store.maintenanceInterval)
        var nextMaintenance = clock.now + maintenanceInterval
        var nextFullPass = clock.now + configuration.idlePoll
        var ahead = ClaimedAhead()
        var idle = IdleLanes()
        while !stopping() {
            if clock.now >= nextMaintenance {
                await releaseExpiredLeases()
                lanes.markSuspensionsStale()
                idle.forgetAll()
                nextMaintenance = clock.now + maintenanceInterval
            }
            // Other processes' work (another instance, `hookproxy replay` on the file) comes with no mark.
            if clock.now >= nextFullPass {
                idle.forgetAll()
                nextFullPass = clock.now + configuration.idlePoll
            }
            idle.forget(wake.takeMarks())
            await lanes.refreshSuspensions()
            // Outcomes are not being committed fast enough (or at all): start nothing until they are.
            if recorder.isBackedUp {
                await wake.wait(timeout: .milliseconds(50))
                continue
            }
            let now = Clock.milliseconds()
            let runtime = self.runtime.runtime
            let lanes = self.lanes.current()
            // Claimed ahead for a destination that a reload removed: back to the store.
            await release(ahead.drop(except: lanes))
            var pass = Pass(wakeAt: now.addingSaturated(configuration.idlePoll.wholeMilliseconds))
            for lane in lanes {
                let (starting, waiting) = await fill(lane, now: now, ahead: &ahead, idle: &idle, pass: &pass)
                for delivery in starting { start(.attempt(delivery, lane, runtime)) }
                for delivery in waiting {
                    guard let formatter = runtime.instances.formatter(source: delivery.event.source, destination: delivery.destination),
                        formattedAhead.expect(delivery, formatter: formatter)
                    else { continue }
                    start(.format(delivery, formatter))
                }
            }
            if pass.busy { continue }
            await wake.wait(timeout: .milliseconds(max(1, pass.wakeAt.subtractingSaturated(Clock.milliseconds()))))
        }
        await release(ahead.drop(except: []))
    }

    /// What one pass over the lanes found.
    private struct Pass {
        /// When the next pass is due unless something wakes the dispatcher first (ms).
        var wakeAt: Int64
        /// A lane used every slot it had: look again at once.
        var busy = false
    }

    /// The deliveries `lane` starts now (its free slots, from what was claimed ahead and a new claim), and those this
    /// claim took ahead of them, which wait for later slots.
    private func fill(
        _ lane: DestinationLane, now: Int64, ahead: inout ClaimedAhead, idle: inout IdleLanes, pass: inout Pass
    ) async -> (starting: ArraySlice<ClaimedDelivery>, waiting: ArraySlice<ClaimedDelivery>) {
        let admission = lane.admission(now: now)
        guard admission.slots > 0 else {
            if let at = admission.wakeAt { pass.wakeAt = min(pass.wakeAt, at) }
            // Held back by more than its own concurrency (suspended, a closed window, an open circuit): what was claimed
            // ahead goes back, so that it shows as pending and its lease does not run.
            if lane.inFlight == 0 || admission.wakeAt != nil {
                let released = ahead.take(lane.name)
                if !released.isEmpty { idle.forget(lane.name) }
                await release(released)
            }
            return ([], [])
        }
        let fifo = lane.ordering == .fifo
        var ready = ahead.take(lane.name)
        var claimedNow = 0
        if let due = idle.due(lane.name, now: now) {
            // Nothing was due at the last claim and nothing new is known: no claim until `due`.
            if due != .max { pass.wakeAt = min(pass.wakeAt, due) }
        } else if ready.count < admission.slots {
            // FIFO lanes claim their head only; others claim what is free now plus `claimAhead` lanes' worth (at most
            // `claimAheadLimit`) ahead, except under a rate limit, whose closed window would send what was claimed
            // ahead back.
            let extra = fifo || lane.isRateLimited ? 0 : min(Self.claimAheadLimit, Self.claimAhead * lane.maxConcurrency)
            let limit = fifo ? 1 : admission.slots - ready.count + extra
            do {
                let claimed = try await store.claimDue(
                    destination: lane.name, fifo: fifo, now: now, limit: limit,
                    leaseUntil: now.addingSaturated(configuration.lease.wholeMilliseconds))
                ready += claimed
                claimedNow = claimed.count
                metrics.increment(
                    "hookproxy_delivery_claims_total", [("destination", lane.name), ("result", claimed.isEmpty ? "empty" : "claimed")])
                if claimed.isEmpty {
                    let due = try await store.nextDue(destination: lane.name, fifo: fifo)
                    // Due already (another instance holds it, or it fell due since the claim): ask again next pass.
                    if due.map({ $0 > now }) ?? true { idle.remember(lane.name, due: due ?? .max) }
                    if let due, due > now { pass.wakeAt = min(pass.wakeAt, due) }
                }
                if ready.isEmpty { return ([], []) }
            } catch {
                logger.error("cannot claim deliveries", metadata: ["destination": "\(lane.name)", "error": "\(error)"])
            }
        }
        let starting = ready.prefix(admission.slots)
        let waiting = ready.dropFirst(starting.count)
        ahead.keep(waiting, for: lane.name)
        lane.started(starting.count)
        if starting.count == admission.slots { pass.busy = true }
        // Those kept from earlier claims are being formatted already.
        return (starting, waiting.suffix(claimedNow))
    }

    /// Returns deliveries claimed ahead and not started to pending. If that fails, their lease runs out instead.
    private func release(_ deliveries: some Collection<ClaimedDelivery>) async {
        guard !deliveries.isEmpty else { return }
        formattedAhead.discard(deliveries.lazy.map(\.id))
        do {
            try await store.release(deliveryIDs: deliveries.map(\.id))
        } catch {
            logger.warning("cannot release deliveries claimed ahead; their lease will", metadata: ["error": "\(error)"])
        }
    }

    private func releaseExpiredLeases() async {
        do {
            let released = try await store.releaseExpiredLeases(now: Clock.milliseconds())
            if released > 0 { logger.warning("released expired delivery leases", metadata: ["count": "\(released)"]) }
        } catch {
            logger.error("cannot release expired leases", metadata: ["error": "\(error)"])
        }
    }
}

/// Destinations whose last claim found nothing due, with when their next delivery is due (`Int64.max`: none waits):
/// the dispatcher does not claim for them before then unless a wake-up marks them.
struct IdleLanes {
    private var dueAt: [String: Int64] = [:]

    /// When `destination` is idle at `now`: its next due time; nil when it should be claimed for.
    func due(_ destination: String, now: Int64) -> Int64? {
        guard let due = dueAt[destination], now < due else { return nil }
        return due
    }

    mutating func remember(_ destination: String, due: Int64) { dueAt[destination] = due }

    mutating func forget(_ destination: String) { dueAt[destination] = nil }

    mutating func forgetAll() { dueAt.removeAll(keepingCapacity: true) }

    /// Forgets what `marks` says may have changed.
    mutating func forget(_ marks: WakeSignal.Marks) {
        guard !dueAt.isEmpty else { return }
        switch marks {
        case .all: forgetAll()
        case .some(let names): for name in names { dueAt[name] = nil }
        }
    }
}

/// Deliveries claimed for a lane and not started yet, by destination.
struct ClaimedAhead {
    private var byDestination: [String: ArraySlice<ClaimedDelivery>] = [:]

    /// Takes what waits for `destination`.
    mutating func take(_ destination: String) -> ArraySlice<ClaimedDelivery> {
        byDestination.removeValue(forKey: destination) ?? []
    }

    /// Keeps `deliveries` for `destination`'s next slots.
    mutating func keep(_ deliveries: ArraySlice<ClaimedDelivery>, for destination: String) {
        byDestination[destination] = deliveries.isEmpty ? nil : deliveries
    }

    /// Takes what waits for every destination without one of `lanes` (nothing to do, and no allocation, when nothing
    /// waits: the usual case on every dispatch pass).
    mutating func drop(except lanes: [DestinationLane]) -> [ClaimedDelivery] {
        guard !byDestination.isEmpty else { return [] }
        var dropped: [ClaimedDelivery] = []
        for name in byDestination.keys where !lanes.contains(where: { $0.name == name }) { dropped += take(name) }
        return dropped
    }
}
