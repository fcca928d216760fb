import Foundation
import HostShims
import Logging
import Synchronization

/// Runs a trusted plugin's calls in this process (`isolation: in_process`), at full speed, on a bounded pool of threads
/// of its own: never on Swift's cooperative pool, so a slow or stuck plugin cannot stop ingest, admin or shutdown.
///
/// - A call past `call_timeout` is answered `aborted` (a strike against its event, as in a worker) by the
///   ``CallWatchdog``; its thread cannot be stopped, so it is set aside and replaced, up to as many stuck threads as
///   the pool has. When every thread is stuck, calls wait no longer than `call_timeout` for one and fail.
/// - Each call is noted in the ``CallJournal`` while it is inside the plugin: if the plugin crashes the process, the
///   next start quarantines the delivery it was formatting (or remembers the body it was mapping).
/// - Instances are first created in a throwaway worker process, so that options that crash the plugin are a
///   configuration error, not a crash at every start.
final class InProcessPool: PluginExecutor, @unchecked Sendable {
    let plugin: LoadedPlugin
    let isolation = PluginIsolation.inProcess
    private let core: Core

    init(native: NativePlugin, settings: PluginSettings, journal: CallJournal?, metrics: HookproxyMetrics?, logger: Logger) {
        plugin = native.identity
        core = Core(native: native, settings: settings, journal: journal, metrics: metrics, logger: logger)
        core.startThreads()
        CallWatchdog.shared.watch(core)
    }

    deinit { core.close() }

    func shutdown() { core.close() }

    func createInstance(options: [UInt8]) async -> Result<UInt32, PluginInstanceError> {
        let plugin = self.plugin
        let memoryLimit = core.settings.memoryLimit
        let checked = await DedicatedThread.run(name: "hookproxy-plugin-check") {
            WorkerPool.checkOptions(plugin: plugin, options: options, memoryLimit: memoryLimit)
        }
        if case .failure(let error) = checked { return .failure(error) }
        return await withCheckedContinuation { continuation in
            core.enqueue(.create(options: options, continuation: continuation))
        }
    }

    func destroyInstance(_ id: UInt32) { core.enqueue(.destroy(id)) }

    func call(_ call: PluginCall) async -> PluginCallResult {
        let pending = PendingCall(call)
        return await pending.result { core.enqueue(.call(pending)) }
    }

    func health() -> PluginHealth { core.health() }

    // MARK: The pool

    fileprivate enum Job {
        case call(PendingCall)
        case create(options: [UInt8], continuation: CheckedContinuation<Result<UInt32, PluginInstanceError>, Never>)
        case destroy(UInt32)
    }

    /// The state the threads share, under `condition`'s lock.
    fileprivate final class Core: @unchecked Sendable, ExpiringPool {
        let native: NativePlugin
        let settings: PluginSettings
        let journal: CallJournal?
        let metrics: HookproxyMetrics?
        let logger: Logger
        let condition = NSCondition()

        // Under `condition`:
        private var queue = CallQueue<Job>()
        private var closed = false
        private var instances: [UInt32: NativePlugin.Handle] = [:]
        private var nextInstance: UInt32 = 1
        /// Threads taking jobs.
        private var live = 0
        /// Threads inside a call that missed its deadline.
        private var stuck = 0
        private var busy = 0
        /// The call each thread is in, by thread number, with whether the watchdog gave up on it and the thread's kernel id.
        private var running: [Int: (call: PendingCall, abandoned: Bool, thread: Int32)] = [:]
        private var nextThread = 0
        private var timeouts = 0
        private var lastFailure: (at: Int64, reason: String)?

        init(native: NativePlugin, settings: PluginSettings, journal: CallJournal?, metrics: HookproxyMetrics?, logger: Logger) {
            self.native = native
            self.settings = settings
            self.journal = journal
            self.metrics = metrics
            self.logger = logger
        }

        func startThreads() {
            condition.lock()
            defer { condition.unlock() }
            for _ in 0..<settings.workers { startThread() }
        }

        /// Starts one more thread; under the lock.
        private func startThread() {
            live += 1
            let number = nextThread
            nextThread += 1
            DedicatedThread.start(name: "hookproxy-plugin-\(native.identity.name)") { [self] in work(number) }
        }

        func enqueue(_ job: Job) {
            condition.lock()
            if closed {
                condition.unlock()
                refuse(job)
                return
            }
            queue.append(job)
            condition.signal()
            condition.unlock()
        }

        private func refuse(_ job: Job) {
            let reason = "plugin '\(native.identity.name)' is shutting down"
            switch job {
            case .call(let pending): pending.answer(.unavailable(reason: reason))
            case .create(_, let continuation): continuation.resume(returning: .failure(PluginInstanceError(message: reason)))
            case .destroy: break
            }
        }

        func close() {
            condition.lock()
            closed = true
            let left = queue.removeAll()
            condition.broadcast()
            condition.unlock()
            for job in left { refuse(job) }
        }

        /// The next job for thread `number`; nil when it should end.
        private func next(_ number: Int) -> Job? {
            condition.lock()
            defer { condition.unlock() }
            while !closed, queue.isEmpty { condition.wait() }
            guard !closed, let job = queue.popFirst() else {
                live -= 1
                return nil
            }
            return job
        }

        private func work(_ number: Int) {
            hp_thread_alternate_stack()
            let thread = hp_current_thread_id()
            while let job = next(number) {
                switch job {
                case .call(let pending):
                    guard pending.start(deadline: .now + settings.callTimeout) else { continue }
                    condition.lock()
                    running[number] = (pending, false, thread)
                    busy += 1
                    condition.unlock()
                    let call = pending.call
                    let started = ContinuousClock.now
                    let output = inside(call.subject, call.operation) {
                        native.call(
                            call.operation, instance: instance(call.instance), document: call.document, body: call.body,
                            contentType: call.contentType)
                    }
                    PluginCallMetrics.observe(
                        plugin: native.identity.name, operation: call.operation, elapsed: .now - started, metrics: metrics, logger: logger)
                    condition.lock()
                    busy -= 1
                    let abandoned = running.removeValue(forKey: number)?.abandoned ?? false
                    if abandoned {
                        // The watchdog answered this call and moved the thread to the idle class: it ends, and a fresh
                        // thread takes its place if the pool is short (it was not replaced while too many were stuck).
                        stuck -= 1
                        if !closed, live < settings.workers { startThread() }
                        condition.unlock()
                        return
                    }
                    condition.unlock()
                    if !abandoned { pending.answer(.output(output)) }
                case .create(let options, let continuation):
                    let result = journalled(.instance) { native.createInstance(options: options) }
                    switch result {
                    case .success(let handle):
                        condition.lock()
                        let id = nextInstance
                        nextInstance += 1
                        instances[id] = handle
                        condition.unlock()
                        continuation.resume(returning: .success(id))
                    case .failure(let error):
                        continuation.resume(returning: .failure(error))
                    }
                case .destroy(let id):
                    condition.lock()
                    let handle = instances.removeValue(forKey: id)
                    condition.unlock()
                    if let handle { journalled(.instance) { native.destroyInstance(handle) } }
                }
            }
        }

        private func instance(_ id: UInt32) -> NativePlugin.Handle {
            condition.lock()
            defer { condition.unlock() }
            return instances[id] ?? NativePlugin.Handle(pointer: nil)
        }

        /// Runs a call with its subject noted in the journal while it is inside the plugin.
        private func inside<T>(_ subject: CallSubject, _ operation: PluginCall.Operation, _ body: () -> T) -> T {
            guard let journal else { return body() }
            let name = native.identity.name
            switch subject {
            case .delivery(let id, let destination):
                return journal.inside(.init(kind: .format, id: id, name: destination, plugin: name), body)
            case .payload(let source, let digest):
                return journal.inside(.init(kind: .map, name: source, plugin: name, digest: digest), body)
            case .none:
                return journal.inside(.init(kind: operation == .format ? .format : .map, plugin: name), body)
            }
        }

        private func journalled<T>(_ kind: CallJournal.Kind, _ body: () -> T) -> T {
            guard let journal else { return body() }
            return journal.inside(.init(kind: kind, plugin: native.identity.name), body)
        }

        // MARK: Watchdog

        /// Answers calls past their deadline (setting their threads aside) and calls that waited too long for a thread.
        func expire(now: ContinuousClock.Instant) {
            var timedOut: [PendingCall] = []
            var starved: [PendingCall] = []
            condition.lock()
            for (number, entry) in running where !entry.abandoned {
                guard let deadline = entry.call.deadline, now >= deadline else { continue }
                running[number] = (entry.call, true, entry.thread)
                // It may spin forever: it runs only when nothing else wants the CPU, from now on.
                _ = hp_deprioritize_thread(entry.thread)
                timedOut.append(entry.call)
                live -= 1
                stuck += 1
                timeouts += 1
                // Replaced while no more than `workers` threads are stuck: the pool stays bounded.
                if stuck <= settings.workers, !closed { startThread() }
            }
            for job in queue.elements {
                if case .call(let pending) = job, pending.isWaiting, now - pending.queuedAt > settings.callTimeout {
                    starved.append(pending)
                }
            }
            let name = native.identity.name
            if !timedOut.isEmpty {
                lastFailure = (Clock.milliseconds(), "plugin \(name) did not answer within \(settings.callTimeout.compactDescription)")
            }
            condition.unlock()
            for pending in timedOut {
                let reason =
                    "plugin \(name) did not answer within \(settings.callTimeout.compactDescription) \(pending.call.operation.doing) (in process: its thread is left running)"
                if pending.answer(.aborted(reason: reason)) {
                    metrics?.increment("hookproxy_plugin_timeouts_total", [("plugin", name), ("operation", "\(pending.call.operation)")])
                    logger.error("plugin call timed out", metadata: ["plugin": "\(name)", "isolation": "in_process"])
                }
            }
            for pending in starved {
                pending.answer(
                    .unavailable(
                        reason:
                            "plugin \(name) had no free thread within \(settings.callTimeout.compactDescription) (its threads are stuck)"))
            }
        }

        var isClosed: Bool {
            condition.lock()
            defer { condition.unlock() }
            return closed
        }

        func health() -> PluginHealth {
            condition.lock()
            defer { condition.unlock() }
            return PluginHealth(
                isolation: .inProcess, workers: settings.workers, running: live, busy: busy, queued: queue.count, crashes: 0,
                timeouts: timeouts, restarts: 0, stuck: stuck, lastFailure: lastFailure, restartingUntil: nil)
        }
    }
}

/// One thread for the whole process that enforces deadlines every 50 ms: in-process calls past `call_timeout`, and calls
/// of either kind of pool that waited that long for a free worker.
final class CallWatchdog: Sendable {
    static let shared = CallWatchdog()

    private let pools = Mutex<[WeakPool]>([])
    private let started = Atomic<Bool>(false)

    private struct WeakPool: @unchecked Sendable {
        // Read and written under `pools`' lock only.
        weak var pool: (any ExpiringPool)?
    }

    func watch(_ pool: any ExpiringPool) {
        pools.withLock { $0.append(WeakPool(pool: pool)) }
        guard !started.exchange(true, ordering: .sequentiallyConsistent) else { return }
        DedicatedThread.start(name: "hookproxy-plugin-watchdog") { [self] in
            while true {
                usleep(50_000)
                let live = pools.withLock { pools -> [any ExpiringPool] in
                    pools.removeAll { $0.pool == nil || $0.pool?.isClosed == true }
                    return pools.compactMap(\.pool)
                }
                let now = ContinuousClock.now
                for pool in live { pool.expire(now: now) }
            }
        }
    }
}
