import AsyncHTTPClient
import Logging
import ServiceLifecycle
import Synchronization

/// The delivery engine: the store is the queue, each destination has a lane.
///
/// On every wake the engine asks each destination's lane how many deliveries may start (concurrency, rate limit,
/// rate-limit window, circuit breaker, FIFO), reads when that destination's next delivery is due, and claims only what
/// may start now, with a lease. Attempts run concurrently; their outcomes are written back in batches (group commit).
/// One destination's state never delays another's deliveries.
///
/// Ingest wakes the engine directly; a timer wakes it for the earliest due delivery or lane change, and at most
/// `idlePoll` passes without a look at the store, so that work added by other processes (`hookproxy replay` with the
/// server running) is picked up. On start every delivery left in flight by a previous process is released; on graceful
/// shutdown the engine stops claiming, lets attempts in flight finish for `shutdownGrace`, cancels and releases the
/// rest, and flushes outcomes.
final class DeliveryEngine: Service, Sendable {
    /// Tuning; the defaults suit a single node.
    struct Configuration: Sendable {
        /// How long a claim holds a delivery; must exceed the longest destination timeout.
        var lease: Duration = .seconds(300)
        /// The longest the engine sleeps without looking at the store.
        var idlePoll: Duration = .seconds(1)
        /// How often expired leases are released.
        var maintenanceInterval: Duration = .seconds(60)
        /// The most attempts whose answer is in but whose outcome is not yet committed; at the limit nothing new starts
        /// (a store that cannot commit, as when the disk is full, stops sending).
        var maximumUncommitted = 256
    }

    private let store: any EventStore
    private let runtime: RuntimeHolder
    private let sender: DeliverySender
    private let wake: WakeSignal
    private let logger: Logger
    private let configuration: Configuration
    private let stopping = Atomic<Bool>(false)
    private let inFlight = Atomic<Int>(0)
    /// Attempts answered whose outcome is not committed yet.
    private let uncommitted = Atomic<Int>(0)
    /// The lanes, by name and in name order, for the runtime generation they were built from.
    private let lanes = Mutex<(generation: Int, byName: [String: DestinationLane], ordered: [DestinationLane])>((-1, [:], []))
    /// The destinations an operator suspended, as last read from the store (shared by every instance).
    private let suspended = Mutex<Set<String>>([])
    /// Set when the store announced a suspension or resumption, and at each maintenance pass: read them again.
    private let suspensionsStale = Atomic<Bool>(true)
    private let buckets = RateLimitBuckets()

    private let metrics: HookproxyMetrics
    private let alerter: Alerter?
    /// Where attempts in progress are noted, and what the previous run left there.
    private let journal: CallJournal?

    init(
        store: any EventStore, runtime: RuntimeHolder, httpClient: HTTPClient, wake: WakeSignal, logger: Logger,
        metrics: HookproxyMetrics = HookproxyMetrics(), alerter: Alerter? = nil, journal: CallJournal? = nil,
        configuration: Configuration = Configuration()
    ) {
        self.store = store
        self.alerter = alerter
        self.journal = journal
        self.runtime = runtime
        self.metrics = metrics
        self.sender = DeliverySender(httpClient: httpClient, logger: logger, metrics: metrics)
        self.wake = wake
        self.logger = logger
        self.configuration = configuration
    }

    /// The flow-control state of every configured destination, for the admin API.
    func laneSnapshots() -> [DestinationLane.Snapshot] {
        let now = Clock.milliseconds()
        return currentLanes().map { $0.snapshot(now: now) }
    }

    /// Suspends or resumes sending to `destination` for an operator: recorded in the store, so that every instance (and
    /// this one after a restart) holds it. Its state afterwards; nil when no such destination is configured.
    func setSuspended(_ suspend: Bool, destination: String) async throws -> DestinationLane.Snapshot? {
        guard let lane = currentLanes().first(where: { $0.name == destination }) else { return nil }
        try await store.setSuspended(suspend, destination: destination)
        suspended.withLock { names in
            if suspend { names.insert(destination) } else { names.remove(destination) }
        }
        lane.setSuspended(suspend)
        // A read of the suspensions that began before this write may land after it: read them once more.
        suspensionsStale.store(true, ordering: .sequentiallyConsistent)
        logger.notice(
            suspend ? "destination suspended by an operator" : "destination resumed by an operator",
            metadata: ["destination": "\(destination)"])
        wake.signal()
        return lane.snapshot()
    }

    /// Reads the suspensions again when the store said they changed (or at a maintenance pass), and applies them.
    private func refreshSuspensions() async {
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
        for lane in currentLanes() where lane.setSuspended(names.contains(lane.name)) {
            logger.notice(
                names.contains(lane.name) ? "destination suspended by an operator" : "destination resumed by an operator",
                metadata: ["destination": "\(lane.name)"])
        }
    }

    /// The lanes of the destinations configured now, in name order; a lane is kept as long as its destination exists.
    /// Rebuilt only when a reload replaced the runtime (every dispatch pass asks).
    private func currentLanes() -> [DestinationLane] {
        let (runtime, generation) = self.runtime.versioned
        return lanes.withLock { lanes in
            guard lanes.generation != generation else { return lanes.ordered }
            let destinations = runtime.config.destinations
            for name in lanes.byName.keys where destinations[name] == nil { lanes.byName[name] = nil }
            lanes.ordered = destinations.values.sorted { $0.name < $1.name }.map { destination in
                if let lane = lanes.byName[destination.name] {
                    // A reload may have changed the destination: its lane takes the new settings and keeps its state.
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

    func run() async throws {
        // Work committed and destinations suspended by other instances (PostgreSQL) are seen at once.
        store.onChange { [self] change in
            if change == .destinationStates { suspensionsStale.store(true, ordering: .sequentiallyConsistent) }
            wake.signal()
        }
        await recoverFromAbnormalExit()
        let released = try await store.releaseAbandonedClaims()
        if released > 0 { logger.info("resuming deliveries left in flight by a stopped process", metadata: ["count": "\(released)"]) }

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
        let maintenanceInterval = min(configuration.maintenanceInterval, store.maintenanceInterval)
        var nextMaintenance = clock.now + maintenanceInterval
        // Deliveries claimed ahead, by destination, started as the lane's slots free up: one claim transaction serves
        // a lane's next `maxConcurrency` deliveries instead of one claim per delivery (decisions §27). Only this loop
        // touches it.
        var ahead: [String: ArraySlice<ClaimedDelivery>] = [:]
        while !stopping.load(ordering: .sequentiallyConsistent) {
            if clock.now >= nextMaintenance {
                await releaseExpiredLeases()
                suspensionsStale.store(true, ordering: .sequentiallyConsistent)
                nextMaintenance = clock.now + maintenanceInterval
            }
            await refreshSuspensions()
            let now = Clock.milliseconds()
            var wakeAt = now.addingSaturated(configuration.idlePoll.wholeMilliseconds)
            var busy = false
            let runtime = self.runtime.runtime
            let lanes = currentLanes()
            // Outcomes are not being committed fast enough (or at all): start nothing until they are.
            if uncommitted.load(ordering: .sequentiallyConsistent) >= configuration.maximumUncommitted {
                await wake.wait(timeout: .milliseconds(50))
                continue
            }
            // Claimed ahead for a destination that a reload removed: back to the store.
            for name in ahead.keys where !lanes.contains(where: { $0.name == name }) {
                await release(ahead.removeValue(forKey: name) ?? [])
            }
            for lane in lanes {
                let admission = lane.admission(now: now)
                guard admission.slots > 0 else {
                    if let at = admission.wakeAt { wakeAt = min(wakeAt, at) }
                    // Held back by more than its own concurrency (suspended, a closed window, an open circuit): what
                    // was claimed ahead goes back, so that it shows as pending and its lease does not run.
                    if lane.inFlight == 0 || admission.wakeAt != nil, let held = ahead.removeValue(forKey: lane.name) {
                        await release(held)
                    }
                    continue
                }
                let fifo = lane.ordering == .fifo
                var ready = ahead[lane.name, default: []]
                do {
                    if ready.count < admission.slots {
                        // FIFO lanes claim their head only; others claim what is free now plus a lane's worth ahead,
                        // except under a rate limit, whose closed window would send what was claimed ahead back.
                        let extra = fifo || lane.isRateLimited ? 0 : lane.maxConcurrency
                        let limit = fifo ? 1 : admission.slots - ready.count + extra
                        let claimed = try await store.claimDue(
                            destination: lane.name, fifo: fifo, now: now, limit: limit,
                            leaseUntil: now.addingSaturated(configuration.lease.wholeMilliseconds))
                        ready += claimed
                        if claimed.isEmpty, ready.isEmpty {
                            if let due = try await store.nextDue(destination: lane.name, fifo: fifo), due > now {
                                wakeAt = min(wakeAt, due)
                            }
                            ahead[lane.name] = nil
                            continue
                        }
                    }
                } catch {
                    logger.error("cannot claim deliveries", metadata: ["destination": "\(lane.name)", "error": "\(error)"])
                }
                let starting = ready.prefix(admission.slots)
                ahead[lane.name] = ready.dropFirst(starting.count)
                lane.started(starting.count)
                if starting.count == admission.slots { busy = true }
                for delivery in starting {
                    inFlight.add(1, ordering: .sequentiallyConsistent)
                    group.addTask { await self.deliver(delivery, runtime: runtime, lane: lane, outcomes: outcomes) }
                }
            }
            if busy { continue }
            let timeout = Duration.milliseconds(max(1, wakeAt - Clock.milliseconds()))
            await wake.wait(timeout: timeout)
        }
        for (_, held) in ahead { await release(held) }
        // Graceful shutdown: let attempts in flight finish, then cancel and release the rest.
        let deadline = clock.now + runtime.runtime.config.server.shutdownGrace
        while inFlight.load(ordering: .sequentiallyConsistent) > 0, clock.now < deadline {
            await wake.wait(timeout: .milliseconds(50))
        }
        let remaining = inFlight.load(ordering: .sequentiallyConsistent)
        if remaining > 0 {
            logger.warning("cancelling attempts still in flight at shutdown; they will be sent again", metadata: ["count": "\(remaining)"])
            group.cancelAll()
        }
    }

    /// Before anything is claimed: what the journal says was in flight when the previous run ended abnormally. The
    /// delivery a crashing in-process plugin was formatting is quarantined at once; every other delivery that was
    /// being attempted counts one abnormal exit, and is quarantined after its destination's `max_crashes` in a row; a
    /// body that crashed an in-process mapper is remembered and refused from now on. Retried until the store takes it:
    /// nothing is resumed before that (so nothing is resumed into the same crash).
    private func recoverFromAbnormalExit() async {
        guard let journal, let previous = journal.previousRun else { return }
        let destinations = runtime.runtime.config.destinations
        var crashes: [CrashRecord] = []
        var culprit: String?
        if let (entry, signal) = previous.crashed {
            let what = signal == 0 ? "called exit()" : "crashed hookproxy (\(WorkerExit.signalName(signal)))"
            switch entry.kind {
            case .format where !entry.id.isEmpty:
                culprit = entry.id
                crashes.append(
                    CrashRecord(
                        deliveryID: entry.id, quarantineAt: 1,
                        reason: "poison event: plugin \(entry.plugin) \(what) formatting this event (isolation: in_process); "
                            + "quarantined at the next start; replay it once the plugin is fixed or isolated"))
            case .map:
                journal.recordPoison(.init(source: entry.name, plugin: entry.plugin, digest: entry.digest))
                logger.error(
                    "an in-process mapper crashed hookproxy on a request body; that body is refused from now on",
                    metadata: ["plugin": "\(entry.plugin)", "source": "\(entry.name)", "signal": "\(signal)"])
            default:
                logger.error(
                    "an in-process plugin crashed hookproxy", metadata: ["plugin": "\(entry.plugin)", "signal": "\(signal)"])
            }
        }
        for entry in previous.entries where entry.kind == .attempt && !entry.id.isEmpty && entry.id != culprit {
            let maximum = destinations[entry.name]?.maxCrashes ?? DestinationConfig.defaultMaxCrashes
            crashes.append(
                CrashRecord(
                    deliveryID: entry.id, quarantineAt: maximum,
                    reason: "poison event: in flight during \(maximum) abnormal exits of hookproxy in a row; quarantined; "
                        + "replay it once the cause is fixed"))
        }
        logger.warning(
            "the previous run ended abnormally",
            metadata: [
                "pid": "\(previous.pid)", "attempts_in_flight": "\(crashes.count - (culprit == nil ? 0 : 1))",
                "crashed_in_plugin": "\(previous.crashed.map { $0.entry.plugin } ?? "-")",
            ])
        var logged = false
        while !stopping.load(ordering: .sequentiallyConsistent) {
            do {
                let quarantined = try await store.recordCrashes(crashes)
                for delivery in quarantined { quarantine(delivery) }
                return
            } catch {
                if !logged {
                    logger.error("cannot record the previous run's crash; delivery waits until it can", metadata: ["error": "\(error)"])
                    logged = true
                }
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Tells operators about a delivery quarantined at start.
    private func quarantine(_ delivery: QuarantinedDelivery) {
        logger.error(
            "delivery quarantined",
            metadata: [
                "event_id": "\(delivery.eventID)", "delivery_id": "\(delivery.deliveryID)", "destination": "\(delivery.destination)",
                "reason": "\(delivery.reason)",
            ])
        metrics.increment("hookproxy_deliveries_quarantined_total", [("destination", delivery.destination)])
        guard let alerter, delivery.source != AlertsConfig.source else { return }
        alerter.raise(
            .init(
                kind: .deliveryDead, subject: delivery.destination,
                title: "Delivery quarantined: \(delivery.source) → \(delivery.destination)",
                summary: "\(delivery.reason). Event \(delivery.eventID); replay: hookproxy replay \(delivery.eventID)",
                details: [
                    ("destination", .string(delivery.destination)), ("event_id", .string(delivery.eventID)),
                    ("delivery_id", .string(delivery.deliveryID)), ("source", .string(delivery.source)),
                ]))
    }

    private func deliver(
        _ delivery: ClaimedDelivery, runtime: Runtime, lane: DestinationLane, outcomes: GroupCommitter<DeliveryOutcome, Void>
    ) async {
        // Noted until the outcome is recorded: if the process dies meanwhile, the next start counts it.
        let note = journal?.begin(.init(kind: .attempt, id: delivery.id, name: delivery.destination))
        defer { journal?.end(note) }
        let result: DeliverySender.Result
        if await waitForOpenWindow(lane) {
            result = await sender.attempt(delivery, runtime: runtime)
            // What the answer says about rate limits applies at once, not after the outcome's commit: another lane on the
            // same bucket may be admitted meanwhile.
            lane.learn(result.feedback, window: result.window, bucket: result.bucket)
        } else {
            result = DeliverySender.released(delivery)
        }
        measure(delivery, result)
        // The lane's slot frees when the answer is in, not when its outcome is committed: the next attempt overlaps the
        // commit (decisions §27). A FIFO line still waits for the commit, since its head stays in flight until then.
        let change = lane.finished(result.feedback)
        uncommitted.add(1, ordering: .sequentiallyConsistent)
        wake.signal()
        // At shutdown the lease covers an outcome not recorded: the delivery is sent again after restart (at least once,
        // never lost).
        var logged = false
        while true {
            do {
                try await outcomes.submit(result.outcome)
                break
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
                if stopping.load(ordering: .sequentiallyConsistent) || Task.isCancelled { break }
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
        uncommitted.subtract(1, ordering: .sequentiallyConsistent)
        alert(delivery, result, circuit: change)
        inFlight.subtract(1, ordering: .sequentiallyConsistent)
        wake.signal()
    }

    /// Tells the operators' alerts destination about a dead delivery (not of an alert: no loops) and a breaker change.
    private func alert(_ delivery: ClaimedDelivery, _ result: DeliverySender.Result, circuit change: DestinationLane.CircuitChange?) {
        guard let alerter else { return }
        let destination = delivery.destination
        if result.outcome.status == .dead, delivery.event.source != AlertsConfig.source {
            alerter.raise(
                .init(
                    kind: .deliveryDead, subject: destination, title: "Delivery dead: \(delivery.event.source) → \(destination)",
                    summary:
                        "\(result.outcome.error ?? "gave up"). Event \(delivery.event.id); replay: hookproxy replay \(delivery.event.id)",
                    details: [
                        ("destination", .string(destination)), ("event_id", .string(delivery.event.id)),
                        ("delivery_id", .string(delivery.id)), ("source", .string(delivery.event.source)),
                    ]))
        }
        switch change {
        case .opened(let until, let failures, let again):
            alerter.raise(
                .init(
                    kind: .destinationPaused, subject: destination, title: "Destination paused: \(destination)",
                    summary: again
                        ? "The probe request failed; paused again until \(Clock.rfc3339(milliseconds: until))."
                        : "\(failures) consecutive failed attempts; paused until \(Clock.rfc3339(milliseconds: until)). Deliveries wait without spending attempts.",
                    details: [("destination", .string(destination)), ("paused_until", .string(Clock.rfc3339(milliseconds: until)))]))
        case .closed:
            alerter.raise(
                .init(
                    kind: .destinationResumed, subject: destination, title: "Destination resumed: \(destination)",
                    summary: "It answers again; queued deliveries are being sent.", details: [("destination", .string(destination))]))
        case nil:
            break
        }
    }

    /// Counts the attempt by outcome, with its duration and, once delivered, the time since the event was received.
    private func measure(_ delivery: ClaimedDelivery, _ result: DeliverySender.Result) {
        let destination = [("destination", delivery.destination)]
        let outcome: String
        switch (result.outcome.status, result.feedback) {
        case (_, .rateLimited): outcome = "rate_limited"
        case (.pending, _): outcome = "released"
        case (let status, _): outcome = status.rawValue
        }
        metrics.increment("hookproxy_delivery_attempts_total", destination + [("outcome", outcome)])
        if case .rateLimited = result.feedback { metrics.increment("hookproxy_rate_limit_waits_total", destination + [("reason", "429")]) }
        if let attempt = result.outcome.attempt, attempt.httpStatus != nil || attempt.error != nil, outcome != "skipped" {
            metrics.record(
                "hookproxy_delivery_attempt_duration_seconds", destination, duration: .milliseconds(attempt.durationMilliseconds))
        }
        if result.outcome.status == .delivered {
            let latency = max(0, Clock.milliseconds() - delivery.event.receivedAt)
            metrics.record("hookproxy_delivery_latency_seconds", destination, duration: .milliseconds(latency))
        }
    }

    /// Waits while a rate-limit window learned after this delivery was admitted is closed (another request's answer,
    /// possibly on another lane sharing the bucket, arrived in between). False when cancelled at shutdown.
    private func waitForOpenWindow(_ lane: DestinationLane) async -> Bool {
        while let until = lane.closedUntil(now: Clock.milliseconds()) {
            metrics.increment("hookproxy_rate_limit_waits_total", [("destination", lane.name), ("reason", "window")])
            do {
                try await Task.sleep(for: .milliseconds(max(1, until - Clock.milliseconds())))
            } catch {
                return false
            }
        }
        return !Task.isCancelled
    }

    /// Returns deliveries claimed ahead and not started to pending. If that fails, their lease runs out instead.
    private func release(_ deliveries: ArraySlice<ClaimedDelivery>) async {
        guard !deliveries.isEmpty else { return }
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
