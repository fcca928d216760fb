import Logging
import ServiceLifecycle
import Synchronization

/// The delivery engine: the store is the queue, each destination has a lane. Its parts, in the order a delivery
/// passes through them:
///
/// 1. ``Dispatcher`` claims what each lane may start now and starts it, and has what it claimed ahead of free slots
///    formatted meanwhile (``FormattedAhead``);
/// 2. ``Attempt`` formats (or takes what was formatted ahead) and sends it, and ``Verdict`` decides what the answer
///    means (the one place it is judged);
/// 3. the lane learns from the verdict (rate-limit windows at once, the breaker when the attempt is over), the metrics
///    count it, and ``OutcomeRecorder`` commits the outcome with others in one transaction;
/// 4. ``Alerter`` tells operators about a dead delivery or a breaker that opened or closed.
///
/// On start, the previous run's crash is recorded (``CrashRecovery``) and every delivery left in flight by a stopped
/// process is released. On graceful shutdown the dispatcher stops claiming, attempts in flight finish for
/// `shutdownGrace`, the rest are cancelled and released, and the recorder commits every outcome before the engine
/// returns.
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

    private let store: any DeliveryQueue
    private let runtime: RuntimeHolder
    private let lanes: Lanes
    private let attempt: Attempt
    private let recorder: OutcomeRecorder
    private let wake: WakeSignal
    private let formattedAhead = FormattedAhead()
    private let logger: Logger
    private let configuration: Configuration
    private let metrics: HookproxyMetrics
    private let alerter: Alerter?
    /// Where attempts in progress are noted, and what the previous run left there.
    private let journal: CallJournal?
    private let stopping = Atomic<Bool>(false)
    private let inFlight = Atomic<Int>(0)

    init(
        store: any DeliveryQueue, runtime: RuntimeHolder, client: DeliveryClient, wake: WakeSignal, logger: Logger,
        metrics: HookproxyMetrics = HookproxyMetrics(), alerter: Alerter? = nil, journal: CallJournal? = nil,
        configuration: Configuration = Configuration()
    ) {
        self.store = store
        self.runtime = runtime
        self.lanes = Lanes(runtime: runtime, store: store, logger: logger)
        self.attempt = Attempt(client: client, formattedAhead: formattedAhead)
        self.recorder = OutcomeRecorder(
            store: store, wake: wake, maximumUncommitted: configuration.maximumUncommitted, logger: logger)
        self.wake = wake
        self.logger = logger
        self.configuration = configuration
        self.metrics = metrics
        self.alerter = alerter
        self.journal = journal
    }

    /// The flow-control state of every configured destination, for the admin API.
    func laneSnapshots() -> [DestinationLane.Snapshot] { lanes.snapshots() }

    /// Suspends or resumes sending to `destination` for an operator: recorded in the store, so that every instance (and
    /// this one after a restart) holds it. Its state afterwards; nil when no such destination is configured.
    func setSuspended(_ suspend: Bool, destination: String) async throws -> DestinationLane.Snapshot? {
        let snapshot = try await lanes.setSuspended(suspend, destination: destination)
        wake.signal()
        return snapshot
    }

    private var isStopping: Bool { stopping.load(ordering: .sequentiallyConsistent) }

    /// Stops claiming; what is in flight finishes or is released.
    private func stop() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        recorder.giveUp()
        wake.signal()
    }

    func run() async throws {
        // Work committed and destinations suspended by other instances (PostgreSQL) are seen at once.
        store.onChange { [lanes, wake] change in
            if change == .destinationStates { lanes.markSuspensionsStale() }
            wake.signal()
        }
        if let journal {
            await CrashRecovery(journal: journal, store: store, alerter: alerter, metrics: metrics, logger: logger)
                .recover(destinations: runtime.runtime.config.destinations) { isStopping }
        }
        let released = try await store.releaseAbandonedClaims()
        if released > 0 { logger.info("resuming deliveries left in flight by a stopped process", metadata: ["count": "\(released)"]) }

        let dispatcher = Dispatcher(
            store: store, lanes: lanes, runtime: runtime, recorder: recorder, wake: wake, formattedAhead: formattedAhead,
            logger: logger, configuration: configuration, metrics: metrics)
        async let recorderFinished: Void = recorder.run()
        // Cancelled when another service failed: stop as on a graceful shutdown (attempts in flight are cancelled with
        // the task and released).
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await withDiscardingTaskGroup { group in
                    await dispatcher.run(stopping: { isStopping }) { work in
                        switch work {
                        case .attempt(let delivery, let lane, let runtime):
                            inFlight.add(1, ordering: .sequentiallyConsistent)
                            group.addTask { await self.deliver(delivery, runtime: runtime, lane: lane) }
                        case .format(let delivery, let formatter):
                            group.addTask { await self.formattedAhead.format(delivery, with: formatter) }
                        }
                    }
                    await finishInFlight(cancelling: &group)
                }
            } onGracefulShutdown: {
                self.stop()
            }
        } onCancel: {
            self.stop()
        }
        recorder.close()
        await recorderFinished
        logger.info("delivery engine stopped")
    }

    /// Graceful shutdown: lets attempts in flight finish for `shutdownGrace`, then cancels the rest (they are released
    /// and sent again after restart), and any formatting ahead still running: the dispatcher has already given back
    /// what it was for.
    private func finishInFlight(cancelling group: inout DiscardingTaskGroup) async {
        let clock = ContinuousClock()
        let deadline = clock.now + runtime.runtime.config.server.shutdownGrace
        while inFlight.load(ordering: .sequentiallyConsistent) > 0, clock.now < deadline {
            await wake.wait(timeout: .milliseconds(50))
        }
        let remaining = inFlight.load(ordering: .sequentiallyConsistent)
        if remaining > 0 {
            logger.warning("cancelling attempts still in flight at shutdown; they will be sent again", metadata: ["count": "\(remaining)"])
        }
        group.cancelAll()
    }

    /// One delivery, from its start to handing its outcome to the recorder; the rest (alerts, the journal, the count of
    /// attempts in flight) runs once the outcome is recorded, and the task does not wait for that (decisions §46).
    private func deliver(_ delivery: ClaimedDelivery, runtime: Runtime, lane: DestinationLane) async {
        // Noted until the outcome is recorded: if the process dies meanwhile, the next start counts it.
        let note = journal?.begin(.init(kind: .attempt, id: delivery.id, name: delivery.destination))
        recorder.attemptStarted()
        let verdict: Verdict
        if await waitForOpenWindow(lane) {
            verdict = await attempt.run(delivery, runtime: runtime)
            // What the answer says about rate limits applies at once, not after the outcome's commit: another lane on
            // the same bucket may be admitted meanwhile.
            lane.learn(verdict.feedback, window: verdict.window, bucket: verdict.bucket)
        } else {
            verdict = Verdict.released(deliveryID: delivery.id, now: Clock.milliseconds())
        }
        log(delivery, verdict)
        measure(delivery, verdict)
        // The lane's slot frees when the answer is in, not when its outcome is committed: the next attempt overlaps the
        // commit (decisions §27). A FIFO line still waits for the commit, since its head stays in flight until then.
        let change = lane.finished(verdict.feedback)
        wake.signalCapacity()
        let outcome = verdict.outcome
        recorder.record(outcome, of: delivery) { [self] in
            journal?.end(note)
            if let alerter {
                if outcome.status == .dead { alerter.deliveryDead(delivery, reason: outcome.error) }
                if let change { alerter.circuit(change, destination: delivery.destination) }
            }
            inFlight.subtract(1, ordering: .sequentiallyConsistent)
        }
    }

    private func log(_ delivery: ClaimedDelivery, _ verdict: Verdict) {
        // Most lines are `info` ("delivered") under the usual `warning` level: nothing is built for a line not written.
        let level = self.logger.logLevel
        guard verdict.log.contains(where: { $0.level >= level }) else { return }
        var logger = self.logger
        logger[metadataKey: "event_id"] = "\(delivery.event.id)"
        logger[metadataKey: "delivery_id"] = "\(delivery.id)"
        logger[metadataKey: "destination"] = "\(delivery.destination)"
        for line in verdict.log where line.level >= level {
            logger.log(level: line.level, "\(line.message)", metadata: line.metadata.mapValues { .string($0) })
        }
    }

    /// Counts the attempt by its verdict, with its duration and, once delivered, the time since the event was received.
    private func measure(_ delivery: ClaimedDelivery, _ verdict: Verdict) {
        let destination = [("destination", delivery.destination)]
        metrics.increment("hookproxy_delivery_attempts_total", destination + [("outcome", verdict.counted.rawValue)])
        if verdict.counted == .rateLimited { metrics.increment("hookproxy_rate_limit_waits_total", destination + [("reason", "429")]) }
        if let plugin = verdict.failedPlugin {
            metrics.increment("hookproxy_plugin_errors_total", [("plugin", plugin), ("operation", "format")])
        }
        if verdict.measured, let attempt = verdict.outcome.attempt {
            metrics.record(
                "hookproxy_delivery_attempt_duration_seconds", destination, duration: .milliseconds(attempt.durationMilliseconds))
        }
        if verdict.outcome.status == .delivered {
            // `received_at` comes from the store: a damaged row must not trap here.
            let latency = max(0, Clock.milliseconds().subtractingSaturated(delivery.event.receivedAt))
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
}
