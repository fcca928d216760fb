import Foundation
import Logging
import Synchronization

/// Runs a plugin's calls in supervised worker processes (`isolation: process`, the default): up to `workers` processes,
/// each running one call at a time, driven by a thread of the host's own (never the cooperative pool).
///
/// - A call that crashes its worker, or misses `call_timeout` (the worker is then killed), is answered `aborted` with a
///   sentence naming the plugin and what happened; the calls queued behind it go to a fresh worker.
/// - A dead worker is started again at once, then with a growing pause (up to 5 s) while it keeps dying; meanwhile calls
///   wait for another worker at most `call_timeout` and fail as `unavailable`.
/// - Each worker's data segment is capped at `memory_limit`; workers die with the host (`PR_SET_PDEATHSIG`) and are
///   stopped when the configuration that created them is replaced.
/// - Under load a driver sends several queued calls in one write, and the worker answers them in order.
final class WorkerPool: PluginExecutor, @unchecked Sendable {
    let plugin: LoadedPlugin
    let isolation = PluginIsolation.process
    private let core: Core

    init(plugin: LoadedPlugin, settings: PluginSettings, metrics: HookproxyMetrics?, logger: Logger) {
        self.plugin = plugin
        core = Core(plugin: plugin, settings: settings, metrics: metrics, logger: logger)
        core.addDriver()
        CallWatchdog.shared.watch(core)
    }

    deinit { core.close() }

    func shutdown() { core.close() }

    func createInstance(options: [UInt8]) async -> Result<UInt32, PluginInstanceError> {
        await withCheckedContinuation { continuation in core.register(options: options, continuation: continuation) }
    }

    func destroyInstance(_ id: UInt32) { core.unregister(id) }

    func call(_ call: PluginCall) async -> PluginCallResult {
        let pending = PendingCall(call)
        return await pending.result { core.enqueue(pending) }
    }

    func health() -> PluginHealth { core.health() }

    /// Creates an instance from `options` in a throwaway worker and destroys it: how an in-process plugin's options are
    /// checked before the host calls the plugin itself. Blocks; call it on a dedicated thread.
    static func checkOptions(plugin: LoadedPlugin, options: [UInt8], memoryLimit: Int) -> Result<Void, PluginInstanceError> {
        let worker: WorkerProcess
        do {
            worker = try WorkerProcess.start(arguments: [plugin.file], memoryLimit: memoryLimit)
        } catch {
            return .failure(error)
        }
        defer { worker.stop(grace: .seconds(1)) }
        let ignoreLog: (UInt8, String) -> Void = { _, _ in }
        do throws(WorkerProcess.Failure) {
            guard case .loaded = try worker.receive(deadline: .now + PluginProbe.loadTimeout, onLog: ignoreLog) else {
                return .failure(PluginInstanceError(message: "plugin '\(plugin.name)' could not be loaded in a worker"))
            }
            try worker.send(WorkerMessage.createInstance(id: 1, options: options).frame(), deadline: .now + Core.instanceTimeout)
            guard case .instanceCreated(_, let ok, let error) = try worker.receive(deadline: .now + Core.instanceTimeout, onLog: ignoreLog)
            else { return .failure(PluginInstanceError(message: "plugin '\(plugin.name)' answered out of turn")) }
            return ok ? .success(()) : .failure(PluginInstanceError(message: error))
        } catch {
            let what: String
            switch error {
            case .timedOut: what = "did not answer within \(Core.instanceTimeout.compactDescription)"
            case .closed: what = worker.reap().describe(memoryLimit: memoryLimit)
            case .malformed(let detail): what = "broke its worker (\(detail))"
            }
            return .failure(PluginInstanceError(message: "plugin '\(plugin.name)' \(what) creating an instance from its options"))
        }
    }

    // MARK: The pool

    /// The state the drivers share, under `condition`'s lock.
    fileprivate final class Core: @unchecked Sendable, ExpiringPool {
        static let instanceTimeout: Duration = .seconds(10)
        /// The most calls one write carries, and the most bytes (a batch must fit in the socket's buffer, so that
        /// writing it never waits on the worker).
        static let batchCalls = 16
        static let batchBytes = 96 << 10

        let plugin: LoadedPlugin
        let settings: PluginSettings
        let metrics: HookproxyMetrics?
        let logger: Logger
        let condition = NSCondition()

        struct Instance {
            var options: [UInt8]
            /// Nil until a worker created it; then whether it could.
            var created: Bool?
            var waiters: [CheckedContinuation<Result<UInt32, PluginInstanceError>, Never>]
        }

        // Under `condition`:
        private var queue = CallQueue<PendingCall>()
        private(set) var closed = false
        fileprivate var instances: [UInt32: Instance] = [:]
        private var nextInstance: UInt32 = 1
        /// Bumped whenever `instances` changes, so that each driver knows when its worker needs to catch up.
        fileprivate var instancesVersion = 0
        private var drivers = 0
        private var busy = 0
        private var running = 0
        fileprivate var crashes = 0
        fileprivate var timeouts = 0
        fileprivate var restarts = 0
        fileprivate var lastFailure: (at: Int64, reason: String)?
        fileprivate var restartingUntil: [Int: ContinuousClock.Instant] = [:]

        init(plugin: LoadedPlugin, settings: PluginSettings, metrics: HookproxyMetrics?, logger: Logger) {
            self.plugin = plugin
            self.settings = settings
            self.metrics = metrics
            var logger = logger
            logger[metadataKey: "plugin"] = "\(plugin.name)"
            self.logger = logger
        }

        /// Starts one more driver (and its worker).
        func addDriver() {
            condition.lock()
            let number = drivers
            drivers += 1
            condition.unlock()
            DedicatedThread.start(name: "hookproxy-worker-\(plugin.name)") { [self] in Driver(core: self, number: number).run() }
        }

        func enqueue(_ pending: PendingCall) {
            condition.lock()
            guard !closed else {
                condition.unlock()
                pending.answer(.unavailable(reason: "plugin '\(plugin.name)' is shutting down"))
                return
            }
            queue.append(pending)
            let grow = busy >= drivers && drivers < settings.workers
            condition.signal()
            condition.unlock()
            if grow { addDriver() }
        }

        /// Puts calls that were taken but not run back at the front of the queue.
        fileprivate func requeue(_ calls: ArraySlice<PendingCall>) {
            guard !calls.isEmpty else { return }
            condition.lock()
            queue.prepend(calls)
            condition.broadcast()
            condition.unlock()
        }

        func register(options: [UInt8], continuation: CheckedContinuation<Result<UInt32, PluginInstanceError>, Never>) {
            condition.lock()
            guard !closed else {
                condition.unlock()
                continuation.resume(returning: .failure(PluginInstanceError(message: "plugin '\(plugin.name)' is shutting down")))
                return
            }
            let id = nextInstance
            nextInstance += 1
            instances[id] = Instance(options: options, created: nil, waiters: [continuation])
            instancesVersion += 1
            condition.broadcast()
            condition.unlock()
        }

        func unregister(_ id: UInt32) {
            condition.lock()
            if instances.removeValue(forKey: id) != nil { instancesVersion += 1 }
            condition.broadcast()
            condition.unlock()
        }

        /// Records what a worker made of instance `id`; the first answer settles whether it exists.
        fileprivate func settle(_ id: UInt32, result: Result<Void, PluginInstanceError>) {
            condition.lock()
            guard var instance = instances[id], instance.created == nil else {
                condition.unlock()
                return
            }
            let waiters = instance.waiters
            switch result {
            case .success:
                instance.created = true
                instance.waiters = []
                instances[id] = instance
            case .failure:
                instances[id] = nil
                instancesVersion += 1
            }
            condition.unlock()
            for waiter in waiters { waiter.resume(returning: result.map { id }) }
        }

        func close() {
            condition.lock()
            closed = true
            let left = queue.removeAll()
            let waiting = instances.values.flatMap(\.waiters)
            instances = [:]
            condition.broadcast()
            condition.unlock()
            let reason = "plugin '\(plugin.name)' is shutting down"
            for pending in left { pending.answer(.unavailable(reason: reason)) }
            for waiter in waiting { waiter.resume(returning: .failure(PluginInstanceError(message: reason))) }
        }

        var isClosed: Bool {
            condition.lock()
            defer { condition.unlock() }
            return closed
        }

        /// Waits until driver `number` has something to do: calls (when it may take them) or instances to create.
        /// Returns nil when the pool closed.
        fileprivate func work(for driver: Driver) -> (calls: [PendingCall], instances: [UInt32: Instance], version: Int)? {
            condition.lock()
            defer { condition.unlock() }
            while true {
                if closed { return nil }
                let now = ContinuousClock.now
                let mayTakeCalls = (restartingUntil[driver.number].map { now >= $0 } ?? true)
                if mayTakeCalls, restartingUntil[driver.number] != nil { restartingUntil[driver.number] = nil }
                let pendingInstances = instances.values.contains { $0.created == nil }
                // A worker that died is started again at once (after its pause), not when the next call arrives.
                let restart = driver.needsRestart && !instances.isEmpty
                let outOfStep = driver.instancesVersion != instancesVersion && (pendingInstances || driver.hasWorker)
                if mayTakeCalls, !queue.isEmpty || restart || outOfStep {
                    var calls: [PendingCall] = []
                    var bytes = 0
                    while let next = queue.elements.first, calls.count < Self.batchCalls {
                        let size = next.call.document.count + next.call.body.count + 64
                        if !calls.isEmpty, bytes + size > Self.batchBytes { break }
                        _ = queue.popFirst()
                        guard next.isWaiting else { continue }
                        calls.append(next)
                        bytes += size
                    }
                    busy += 1
                    return (calls, instances, instancesVersion)
                }
                if let until = restartingUntil[driver.number] {
                    _ = condition.wait(until: Date(timeIntervalSinceNow: max(0.001, (until - now).seconds)))
                } else {
                    condition.wait()
                }
            }
        }

        fileprivate func finishedWork() {
            condition.lock()
            busy -= 1
            condition.unlock()
        }

        fileprivate func workerStarted(again: Bool) {
            condition.lock()
            running += 1
            if again { restarts += 1 }
            condition.unlock()
            if again { metrics?.increment("hookproxy_plugin_worker_restarts_total", [("plugin", plugin.name)]) }
        }

        /// A worker died (or was killed): counted, and driver `number` waits `pause` before starting the next.
        fileprivate func workerEnded(
            number: Int, wasRunning: Bool, failure: (reason: String, timedOut: Bool, operation: String)?, pause: Duration
        ) {
            condition.lock()
            if wasRunning { running -= 1 }
            if let failure {
                if failure.timedOut { timeouts += 1 } else { crashes += 1 }
                lastFailure = (Clock.milliseconds(), failure.reason)
            }
            if pause > .zero { restartingUntil[number] = .now + pause }
            condition.unlock()
            if let failure {
                metrics?.increment(
                    failure.timedOut ? "hookproxy_plugin_timeouts_total" : "hookproxy_plugin_crashes_total",
                    [("plugin", plugin.name), ("operation", failure.operation)])
                logger.error("\(failure.reason)", metadata: ["isolation": "process"])
            }
        }

        /// How long a call may wait for a free worker: twice its deadline, and at least long enough to start a worker.
        var queueTimeout: Duration { max(settings.callTimeout * 2, .seconds(5)) }

        /// Answers calls that waited longer than ``queueTimeout`` for a worker.
        func expire(now: ContinuousClock.Instant) {
            var starved: [PendingCall] = []
            condition.lock()
            for pending in queue.elements where pending.isWaiting && now - pending.queuedAt > queueTimeout {
                starved.append(pending)
            }
            let restarting = !restartingUntil.isEmpty
            condition.unlock()
            let cause = restarting ? "its workers keep dying and are being restarted" : "its workers are busy"
            for pending in starved {
                pending.answer(
                    .unavailable(
                        reason: "plugin \(plugin.name) had no free worker within \(queueTimeout.compactDescription) (\(cause))"))
            }
        }

        func health() -> PluginHealth {
            condition.lock()
            defer { condition.unlock() }
            let now = ContinuousClock.now
            let until = restartingUntil.values.filter { $0 > now }.min().map {
                Clock.milliseconds().addingSaturated(($0 - now).wholeMilliseconds)
            }
            return PluginHealth(
                isolation: .process, workers: settings.workers, running: running, busy: busy, queued: queue.count,
                crashes: crashes, timeouts: timeouts, restarts: restarts, stuck: 0, lastFailure: lastFailure, restartingUntil: until)
        }
    }

    // MARK: A driver

    /// One worker process and the thread that talks to it: starts it, keeps its instances in step with the pool's,
    /// sends it calls and reads their answers against their deadlines, and starts it again when it dies.
    fileprivate final class Driver {
        let core: Core
        let number: Int
        private var worker: WorkerProcess?
        private var started = false
        private var workerInstances = Set<UInt32>()
        fileprivate private(set) var instancesVersion = -1
        private var consecutiveDeaths = 0
        private var nextCall: UInt64 = 1

        init(core: Core, number: Int) {
            self.core = core
            self.number = number
        }

        var hasWorker: Bool { worker != nil }

        /// It had a worker, which died.
        var needsRestart: Bool { started && worker == nil }

        private var name: String { core.plugin.name }

        func run() {
            while let work = core.work(for: self) {
                defer { core.finishedWork() }
                guard ensureWorker() else {
                    let reason = "plugin \(name) cannot start a worker"
                    for pending in work.calls { pending.answer(.unavailable(reason: reason)) }
                    continue
                }
                // A restart (no calls) brings the new worker's instances in step before any call arrives.
                if work.version != instancesVersion || work.calls.isEmpty, !sync(work.instances, version: work.version) {
                    core.requeue(work.calls[...])
                    continue
                }
                run(work.calls)
            }
            worker?.stop(grace: .seconds(1))
            worker = nil
        }

        /// Starts the worker if there is none; false (after settling what waited on it) when it cannot be started.
        private func ensureWorker() -> Bool {
            if worker != nil { return true }
            let settings = core.settings
            do throws(PluginInstanceError) {
                let process = try WorkerProcess.start(arguments: [core.plugin.file], memoryLimit: settings.memoryLimit)
                let message = try? process.receive(deadline: .now + PluginProbe.loadTimeout, onLog: log)
                guard case .loaded(let loaded) = message, loaded.name == name, loaded.capabilities == core.plugin.capabilities else {
                    let exit = process.kill()
                    throw PluginInstanceError(
                        message:
                            "plugin \(name)'s worker did not load \(core.plugin.file) as before (\(exit.describe(memoryLimit: settings.memoryLimit)))"
                    )
                }
                worker = process
                workerInstances = []
                instancesVersion = -1
                core.workerStarted(again: started)
                started = true
                return true
            } catch {
                died(failure: nil, operation: "start")
                core.logger.error("cannot start a plugin worker", metadata: ["error": "\(error.message)"])
                for id in pendingInstanceIDs() {
                    core.settle(id, result: .failure(PluginInstanceError(message: error.message)))
                }
                return false
            }
        }

        private func pendingInstanceIDs() -> [UInt32] {
            core.condition.lock()
            defer { core.condition.unlock() }
            return core.instances.filter { $0.value.created == nil }.map(\.key)
        }

        private func log(_ level: UInt8, _ text: String) {
            HostCallbacks.logger.log(level: HostCallbacks.level(UInt32(level)), "\(text)", metadata: ["plugin": "\(name)"])
        }

        /// Brings the worker's instances in line with the pool's; false when the worker died doing so.
        private func sync(_ wanted: [UInt32: Core.Instance], version: Int) -> Bool {
            guard let worker else { return false }
            let memoryLimit = core.settings.memoryLimit
            for id in workerInstances where wanted[id] == nil {
                try? worker.send(WorkerMessage.destroyInstance(id: id).frame(), deadline: .now + Core.instanceTimeout)
                workerInstances.remove(id)
            }
            for (id, instance) in wanted.sorted(by: { $0.key < $1.key }) where !workerInstances.contains(id) {
                do throws(WorkerProcess.Failure) {
                    try worker.send(
                        WorkerMessage.createInstance(id: id, options: instance.options).frame(), deadline: .now + Core.instanceTimeout)
                    guard
                        case .instanceCreated(let answered, let ok, let error) = try worker.receive(
                            deadline: .now + Core.instanceTimeout, onLog: log),
                        answered == id
                    else { throw WorkerProcess.Failure.malformed("an answer out of turn") }
                    if ok {
                        workerInstances.insert(id)
                        core.settle(id, result: .success(()))
                    } else {
                        core.settle(id, result: .failure(PluginInstanceError(message: error)))
                    }
                } catch {
                    let what: String
                    switch error {
                    case .timedOut:
                        worker.kill()
                        what = "did not answer within \(Core.instanceTimeout.compactDescription)"
                    case .closed: what = worker.reap().describe(memoryLimit: memoryLimit)
                    case .malformed(let detail):
                        worker.kill()
                        what = "broke its worker (\(detail))"
                    }
                    let reason = "plugin \(name) \(what) creating an instance from its options"
                    core.settle(id, result: .failure(PluginInstanceError(message: reason)))
                    died(failure: (reason, error.isTimeout), operation: "instance")
                    return false
                }
            }
            instancesVersion = version
            return true
        }

        /// Sends `calls` in one write and reads their answers in order, each within `call_timeout` of the one before.
        private func run(_ calls: [PendingCall]) {
            guard let worker, !calls.isEmpty else { return }
            let settings = core.settings
            var ids: [UInt64] = []
            var frame: [UInt8] = []
            var runnable: [PendingCall] = []
            for pending in calls {
                guard workerInstances.contains(pending.call.instance) else {
                    pending.answer(.unavailable(reason: "plugin \(name)'s worker has no instance \(pending.call.instance)"))
                    continue
                }
                let id = nextCall
                nextCall += 1
                ids.append(id)
                runnable.append(pending)
                let call = pending.call
                frame += WorkerMessage.call(
                    id: id, operation: call.operation.rawValue, instance: call.instance, document: call.document, body: call.body,
                    contentType: Array(call.contentType.utf8)
                ).frame()
            }
            guard !runnable.isEmpty else { return }
            var start = ContinuousClock.now
            for pending in runnable { _ = pending.start(deadline: start + settings.callTimeout * runnable.count) }
            do throws(WorkerProcess.Failure) {
                try worker.send(frame, deadline: start + settings.callTimeout)
            } catch {
                fail(runnable[...], worker: worker, error: error)
                return
            }
            for (index, pending) in runnable.enumerated() {
                do throws(WorkerProcess.Failure) {
                    let message = try worker.receive(deadline: start + settings.callTimeout, onLog: log)
                    guard case .result(let id, let output) = message, id == ids[index] else {
                        throw WorkerProcess.Failure.malformed("an answer out of turn")
                    }
                    let answered = ContinuousClock.now
                    PluginCallMetrics.observe(
                        plugin: name, operation: pending.call.operation, elapsed: answered - start, metrics: core.metrics,
                        logger: core.logger)
                    start = answered
                    consecutiveDeaths = 0
                    pending.answer(.output(output))
                } catch {
                    fail(runnable[index...], worker: worker, error: error)
                    return
                }
            }
        }

        /// The first of `calls` was running when the worker failed: it is answered `aborted`; the rest go back to the
        /// queue for the next worker.
        private func fail(_ calls: ArraySlice<PendingCall>, worker: WorkerProcess, error: WorkerProcess.Failure) {
            guard let culprit = calls.first else { return }
            let memoryLimit = core.settings.memoryLimit
            let doing = culprit.call.operation.doing
            let reason: String
            switch error {
            case .timedOut:
                worker.kill()
                reason = "plugin \(name) did not answer within \(core.settings.callTimeout.compactDescription) \(doing)"
            case .closed:
                reason = "plugin \(name) \(worker.reap().describe(memoryLimit: memoryLimit)) \(doing)"
            case .malformed(let detail):
                worker.kill()
                reason = "plugin \(name) broke its worker \(doing) (\(detail))"
            }
            culprit.answer(.aborted(reason: reason))
            let rest = calls.dropFirst()
            for pending in rest { pending.requeue() }
            core.requeue(rest)
            died(failure: (reason, error.isTimeout), operation: "\(culprit.call.operation)")
        }

        /// Deaths in a row (without a call answered in between) after which the next start waits.
        static let deathsBeforePause = 3

        /// The worker is gone: the next one starts at once for the first few deaths in a row (each one usually a call
        /// that crashed it, and the calls behind it should not wait), then after a pause that doubles up to 5 s.
        private func died(failure: (reason: String, timedOut: Bool)?, operation: String) {
            let wasRunning = worker != nil
            worker = nil
            consecutiveDeaths += 1
            let beyond = consecutiveDeaths - Self.deathsBeforePause
            let pause: Duration = beyond <= 0 ? .zero : min(.seconds(5), .milliseconds(50) * (1 << min(beyond - 1, 7)))
            core.workerEnded(
                number: number, wasRunning: wasRunning, failure: failure.map { ($0.reason, $0.timedOut, operation) }, pause: pause)
        }
    }
}

extension WorkerProcess.Failure {
    var isTimeout: Bool {
        if case .timedOut = self { return true }
        return false
    }
}

/// A pool whose queued calls the ``CallWatchdog`` expires.
protocol ExpiringPool: AnyObject, Sendable {
    func expire(now: ContinuousClock.Instant)
    var isClosed: Bool { get }
}
