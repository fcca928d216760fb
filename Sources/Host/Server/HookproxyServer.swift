import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The whole server: ingest listener, admin listener, ingest writer (group commit), delivery engine and retention
/// sweeper, run as one `ServiceGroup` with graceful shutdown.
///
/// Shutdown order is the reverse of start-up: the listeners stop accepting and finish the requests they have, then the
/// engine finishes or releases attempts in flight, then the writer commits what is queued, then the store closes.
final class HookproxyServer: Sendable {
    /// Tuning that is not part of `sources.yaml`.
    struct Configuration: Sendable {
        var engine = DeliveryEngine.Configuration()
        /// Signals that start a graceful shutdown (none for in-process use, e.g. tests).
        var shutdownSignals: [UnixSignal] = [.sigterm, .sigint]
        /// Serve the benchmark's no-op ceiling route (`HOOKPROXY_BENCH_NOOP_ROUTE=1`, docs/benchmarks.md).
        var benchNoopRoute = false
        /// Once both listeners are bound, unmap the code and constant data that starting touched
        /// (``Allocator/releaseStartupPages()``): `hookproxy serve` does, tests in process do not.
        var releaseStartupPages = false
    }

    let runtime: RuntimeHolder
    let store: any EventStore
    private let logger: Logger
    private let configuration: Configuration
    private let ports = Listening()
    private let group = Mutex<ServiceGroup?>(nil)
    /// The ingest writer: events from concurrent requests are committed together.
    let ingestWriter: GroupCommitter<NewEvent, InsertResult>
    /// Hot reload (SIGHUP, `POST /admin/reload`).
    let reloader: Reloader
    /// What `GET /metrics` shows.
    let metrics: HookproxyMetrics
    /// What is in flight, for the next start to read after a crash.
    let journal: CallJournal

    /// A configuration's problems (exit 2), or a runtime failure such as an unreachable store (exit 1).
    enum StartError: Error, CustomStringConvertible {
        case config(ConfigError)
        case runtime(String)

        var description: String {
            switch self {
            case .config(let error): error.description
            case .runtime(let message): message
            }
        }
    }

    /// Opens the in-flight journal and the store, discovers plugins and creates their instances.
    init(config: HookproxyConfig, logger: Logger, configuration: Configuration = Configuration()) async throws(StartError) {
        self.logger = logger
        self.configuration = configuration
        let metrics = HookproxyMetrics()
        self.metrics = metrics
        let alternates: Int
        if case .postgres = config.storage.backend { alternates = 16 } else { alternates = 0 }
        let journal: CallJournal
        do {
            journal = try CallJournal.open(path: config.storage.journalPath, alternates: alternates)
        } catch {
            throw .runtime(error.description)
        }
        self.journal = journal
        let runtime: Runtime
        do {
            runtime = try await Runtime.make(config: config, logger: logger, journal: journal, metrics: metrics)
        } catch {
            journal.close()
            throw .config(error)
        }
        self.runtime = RuntimeHolder(runtime)
        self.reloader = Reloader(holder: self.runtime, logger: logger, metrics: metrics, journal: journal)
        let store: any EventStore
        do {
            store = try await openEventStore(runtime.config.storage, logger: logger)
        } catch {
            runtime.plugins.shutdown()
            journal.close()
            throw .runtime("\(error)")
        }
        self.store = store
        ingestWriter = GroupCommitter { events in try await store.insert(events) }
    }

    /// Runs until a shutdown signal (or ``shutdown()``), then drains and returns.
    func run() async throws {
        let config = runtime.runtime.config
        let wake = WakeSignal()
        let store = self.store
        let writer = ingestWriter

        // Per-destination concurrency is capped by the lanes; the pool keeps as many connections per host as the widest
        // lane may use at once. A refused connection fails the attempt at once: the destination's retry schedule decides
        // when to try again.
        var clientConfiguration = DeliveryClient.Configuration()
        clientConfiguration.maxIdlePerHost = max(8, config.destinations.values.map(\.maxConcurrency).max() ?? 8)
        let deliveryClient = DeliveryClient(configuration: clientConfiguration)

        let ingestor = Ingestor(runtime: runtime, writer: writer, wake: wake, logger: logger, journal: journal)
        let alerter = Alerter(runtime: runtime, store: store, wake: wake, logger: logger)
        reloader.observe { report in
            for refusal in report.refusedPlugins {
                alerter.raise(
                    .init(
                        kind: .pluginRefused, subject: refusal.file, title: "Plugin refused at reload",
                        summary: "\(refusal.file): \(refusal.reason)", details: [("file", .string(refusal.file))]))
            }
        }
        let counters = IngestCounters()
        let limits = IngestLimits()
        let reloader = self.reloader
        let metrics = self.metrics
        let ports = self.ports
        let decoder = HTTP1Channel.Configuration.DecoderConfiguration(
            maxHeaderFieldSize: config.server.maxHeaderBytes, maxHeaderListSize: config.server.maxHeaderBytes,
            maxHeaderFieldCount: config.server.maxHeaders)
        let ingestApp = Application(
            router: IngestRoutes.router(
                ingestor: ingestor, limits: limits, counters: counters, metrics: metrics, logger: logger,
                noopRoute: configuration.benchNoopRoute),
            server: .http1(
                configuration: .init(
                    // Twice the read timeout: a body still arriving is answered 408 by the read deadline first; a
                    // connection that sends nothing at all is closed.
                    idleTimeout: .milliseconds((config.server.readTimeout * 2).wholeMilliseconds), httpDecoderConfiguration: decoder)),
            configuration: .init(address: .hostname(config.server.listen.host, port: config.server.listen.port), serverName: nil),
            onServerRunning: { channel in ports.bound(.ingest, port: channel.localAddress?.port ?? 0) },
            logger: logger)
        let engine = DeliveryEngine(
            store: store, runtime: runtime, client: deliveryClient, wake: wake, logger: logger, metrics: metrics,
            alerter: alerter, journal: journal, configuration: configuration.engine)
        let adminApp = Application(
            router: AdminRoutes.router(
                store: store, runtime: runtime, engine: engine, counters: counters, limits: limits, reloader: reloader,
                metrics: metrics, wake: wake, logger: logger, listenHost: config.server.adminListen.host),
            configuration: .init(
                address: .hostname(config.server.adminListen.host, port: config.server.adminListen.port), serverName: nil),
            onServerRunning: { channel in ports.bound(.admin, port: channel.localAddress?.port ?? 0) },
            logger: logger)

        // Graceful shutdown stops the services in the reverse of this order, each after the one behind it returned:
        // the listeners stop taking requests, the ingest writer commits what they accepted, the engine finishes or
        // releases its sends and records their outcomes, the Alerter stores the last alerts; then the store's own
        // services stop (PostgreSQL: the instance leaves the instances table, then the connection pool closes).
        var services: [ServiceGroupConfiguration.ServiceConfiguration] =
            store.services + [
                .init(service: alerter),
                .init(service: engine),
                .init(service: CommitterService(committer: writer)),
                .init(service: RetentionSweeper(store: store, runtime: runtime, logger: logger)),
                .init(service: FirstByteSweeper(watch: limits.firstByte)),
                .init(service: MemoryTrimmer(started: configuration.releaseStartupPages ? ports.started : nil)),
            ]
        // A process that handles signals (not tests in-process) reloads on SIGHUP.
        if !configuration.shutdownSignals.isEmpty { services.append(.init(service: ReloadOnSignal(reloader: reloader))) }
        services += [.init(service: ingestApp), .init(service: adminApp)]
        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: services,
                gracefulShutdownSignals: configuration.shutdownSignals,
                logger: logger))
        group.withLock { $0 = serviceGroup }
        logger.info(
            "hookproxy starting",
            metadata: [
                "version": "\(HookproxyVersion.current)", "listen": "\(config.server.listen)", "admin": "\(config.server.adminListen)",
                "sources": "\(config.sources.count)", "destinations": "\(config.destinations.count)",
            ])
        do {
            try await serviceGroup.run()
        } catch {
            ports.failed()
            runtime.runtime.plugins.shutdown()
            await deliveryClient.shutdown()
            try? await store.close()
            journal.close()
            throw error
        }
        // Worker processes end with the configuration that started them; the last one's are stopped here.
        runtime.runtime.plugins.shutdown()
        await deliveryClient.shutdown()
        try await store.close()
        journal.close()
        logger.info("hookproxy stopped")
    }

    /// Starts a graceful shutdown.
    func shutdown() async {
        let serviceGroup = group.withLock { $0 }
        await serviceGroup?.triggerGracefulShutdown()
    }

    /// Waits until both listeners are bound; returns their ports (useful with port 0). Throws when the server failed.
    func listeningPorts() async throws -> (ingest: Int, admin: Int) {
        try await ports.wait()
    }
}

/// Runs a ``GroupCommitter`` as a service: on graceful shutdown (or cancellation) it stops taking new items and commits
/// what is queued.
struct CommitterService<Item: Sendable, Output: Sendable>: Service {
    let committer: GroupCommitter<Item, Output>

    func run() async throws {
        // Cancelled when another service failed (a listener that cannot bind): stop as on a graceful shutdown, or
        // the group would wait for this writer forever.
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await committer.run()
            } onGracefulShutdown: {
                committer.close()
            }
        } onCancel: {
            committer.close()
        }
    }
}

/// The listeners' bound ports, awaited by whoever needs them.
final class Listening: Sendable {
    enum Listener { case ingest, admin }

    private struct State {
        var ingest: Int?
        var admin: Int?
        var failed = false
        var waiters: [CheckedContinuation<(ingest: Int, admin: Int), any Error>] = []
    }

    private let state = Mutex(State())
    private let startedStream = AsyncStream<Void>.makeStream()

    /// Finishes once both listeners are bound (or the server failed); a task waiting on it can still be cancelled.
    var started: AsyncStream<Void> { startedStream.stream }

    struct NotListening: Error, CustomStringConvertible {
        var description: String { "the server stopped before its listeners were bound" }
    }

    func bound(_ listener: Listener, port: Int) {
        let ready = state.withLock { state -> ([CheckedContinuation<(ingest: Int, admin: Int), any Error>], (Int, Int))? in
            switch listener {
            case .ingest: state.ingest = port
            case .admin: state.admin = port
            }
            guard let ingest = state.ingest, let admin = state.admin else { return nil }
            defer { state.waiters = [] }
            return (state.waiters, (ingest, admin))
        }
        guard let (waiters, ports) = ready else { return }
        startedStream.continuation.finish()
        for waiter in waiters { waiter.resume(returning: ports) }
    }

    func failed() {
        let waiters = state.withLock { state in
            state.failed = true
            defer { state.waiters = [] }
            return state.waiters
        }
        startedStream.continuation.finish()
        for waiter in waiters { waiter.resume(throwing: NotListening()) }
    }

    func wait() async throws -> (ingest: Int, admin: Int) {
        try await withCheckedThrowingContinuation { continuation in
            let result = state.withLock { state -> Result<(ingest: Int, admin: Int), any Error>? in
                if let ingest = state.ingest, let admin = state.admin { return .success((ingest, admin)) }
                if state.failed { return .failure(NotListening()) }
                state.waiters.append(continuation)
                return nil
            }
            if let result { continuation.resume(with: result) }
        }
    }
}
