import Logging

/// Where a plugin's calls run: in supervised worker processes (``WorkerPool``, the default) or on threads of the host's
/// own (``InProcessPool``). Either way a call never runs on Swift's cooperative pool, has a deadline, and comes back as
/// a ``PluginCallResult`` whatever the plugin did.
protocol PluginExecutor: AnyObject, Sendable {
    /// The plugin the calls go to.
    var plugin: LoadedPlugin { get }
    /// `process` or `in_process`.
    var isolation: PluginIsolation { get }

    /// Creates an instance from `options` (a JSON object's text) in every worker; its id, or why the plugin refused it.
    func createInstance(options: [UInt8]) async -> Result<UInt32, PluginInstanceError>

    /// Destroys an instance once no call uses it any more. Never blocks.
    func destroyInstance(_ id: UInt32)

    /// Runs one format or map call.
    func call(_ call: PluginCall) async -> PluginCallResult

    /// What `GET /admin/plugins` shows.
    func health() -> PluginHealth

    /// Stops the workers (or threads) once the calls in progress are over; later calls fail at once.
    func shutdown()
}

/// The isolation of a plugin's calls (`plugins.isolation`, per plugin in `plugins.overrides`).
enum PluginIsolation: String, Sendable, CaseIterable {
    /// In worker processes: a crash, hang or runaway allocation fails one call only.
    case process
    /// On threads of the host: full speed, for plugins an operator trusts. A crash ends the host, and the delivery it
    /// was formatting is quarantined at the next start.
    case inProcess = "in_process"
}

/// One call into a plugin.
struct PluginCall: Sendable {
    enum Operation: UInt8, Sendable {
        case format = 1
        case map = 2

        /// `formatting this event`, `mapping this request`: for messages.
        var doing: String { self == .format ? "formatting this event" : "mapping this request" }
    }

    var operation: Operation
    var instance: UInt32
    /// The event document (format) or the mapper document (map), as JSON bytes.
    var document: [UInt8]
    var body: [UInt8]
    var contentType: String
    /// What the in-process journal records while the call is inside the plugin, so that a crash is charged to it.
    var subject: CallSubject
}

/// What a plugin call is about, for the journal.
enum CallSubject: Sendable, Equatable {
    /// Formatting a delivery.
    case delivery(id: String, destination: String)
    /// Mapping a request's body for a source (the digest is the SHA-256 of the body).
    case payload(source: String, digest: [UInt8])
    /// Nothing to charge (a preview).
    case none
}

/// What a plugin's function filled in, copied out of plugin memory: the ABI's `hookproxy_output` and status.
struct PluginOutput: Sendable {
    var status: UInt32
    var body: [UInt8] = []
    var contentType = ""
    var headers: [(name: String, value: String)] = []
    var error = ""
}

/// How a call ended.
enum PluginCallResult: Sendable {
    /// The plugin answered.
    case output(PluginOutput)
    /// The call crashed its worker, or did not answer within the deadline: a strike against the event (twice, and a
    /// delivery is dead as a poison event). The reason names the plugin and what happened.
    case aborted(reason: String)
    /// The call could not be made (no worker could be started, the plugin is shutting down, every worker was busy until
    /// the deadline): not the event's fault, retried on the schedule.
    case unavailable(reason: String)
    /// The caller stopped waiting (shutdown).
    case cancelled
}

/// A plugin's workers or threads, as `GET /admin/plugins` and `hookproxy plugins` show them.
struct PluginHealth: Sendable {
    var isolation: PluginIsolation
    /// Worker processes (or threads) configured.
    var workers: Int
    /// Running now.
    var running: Int
    /// Busy with a call now.
    var busy: Int
    /// Calls waiting for a free worker.
    var queued: Int
    var crashes: Int
    var timeouts: Int
    /// Workers started again after one died or was killed.
    var restarts: Int
    /// In process: threads still inside a call that missed its deadline (they cannot be stopped).
    var stuck: Int
    /// The last crash or timeout, as a sentence, with its time (ms).
    var lastFailure: (at: Int64, reason: String)?
    /// When the next worker start is held back after repeated deaths (ms), if it is.
    var restartingUntil: Int64?

    /// `restarting` (workers are held back after dying repeatedly), `degraded` (threads stuck in calls that missed
    /// their deadline) or `healthy`.
    var state: String {
        if restartingUntil != nil { return "restarting" }
        if stuck > 0 { return "degraded" }
        return "healthy"
    }
}

/// What executors report about each call that answered: its time in the plugin (not its wait for a worker).
enum PluginCallMetrics {
    /// Records the call's duration (`hookproxy_plugin_format_duration_seconds` for format calls) and, past
    /// ``PluginInstance/slowCall``, counts and logs it as slow.
    static func observe(
        plugin: String, operation: PluginCall.Operation, elapsed: Duration, metrics: HookproxyMetrics?, logger: Logger
    ) {
        if operation == .format { metrics?.record("hookproxy_plugin_format_duration_seconds", [("plugin", plugin)], duration: elapsed) }
        guard elapsed > PluginInstance.slowCall else { return }
        metrics?.increment("hookproxy_plugin_slow_calls_total", [("plugin", plugin), ("operation", "\(operation)")])
        logger.warning("plugin call slow", metadata: ["plugin": "\(plugin)", "operation": "\(operation)", "took": "\(elapsed)"])
    }
}
