import PluginABI
import PluginKit

/// One instance of a plugin, created from options for a destination (or a source's override, or a mapper), and the
/// host's handle on it: every format and map call goes through here to the plugin's executor (worker processes, or
/// threads of its own in process), and comes back as an outcome whatever the plugin did.
///
/// The instance is destroyed when the last reference goes away, which is after every call that holds it has returned:
/// a reload retires old instances without cutting off in-flight work.
final class PluginInstance: Sendable {
    /// A format or map call taking longer than this is reported (logged, and counted in
    /// `hookproxy_plugin_slow_calls_total`); past `call_timeout` it is abandoned.
    static let slowCall: Duration = .milliseconds(500)

    let plugin: LoadedPlugin
    let executor: any PluginExecutor
    private let id: UInt32

    /// What a formatter decided.
    enum FormatOutcome: Sendable {
        case send(body: [UInt8], contentType: String, headers: [(name: String, value: String)])
        case skip(reason: String)
        case failed(message: String, permanent: Bool)
        /// The call crashed its worker or missed its deadline: a strike against the event.
        case aborted(reason: String)
        /// The call could not be made (no worker free or startable in time): not the event's fault.
        case unavailable(reason: String)
        /// The caller gave up (shutdown).
        case cancelled
    }

    /// What a mapper produced.
    enum MapOutcome: Sendable {
        case fields(JSONObject)
        case failed(message: String, permanent: Bool)
        /// The call crashed its worker or missed its deadline.
        case aborted(reason: String)
    }

    private init(plugin: LoadedPlugin, executor: any PluginExecutor, id: UInt32) {
        self.plugin = plugin
        self.executor = executor
        self.id = id
    }

    /// Creates an instance from `options` on `executor`; throws the plugin's reason when it rejects them (or crashes).
    static func make(options: JSONValue, executor: any PluginExecutor) async throws(PluginInstanceError) -> PluginInstance {
        switch await executor.createInstance(options: Array(options.serialized().utf8)) {
        case .success(let id): return PluginInstance(plugin: executor.plugin, executor: executor, id: id)
        case .failure(let error): throw error
        }
    }

    deinit {
        executor.destroyInstance(id)
    }

    /// Calls `on_format` with the event document and the raw body.
    func format(document: [UInt8], body: [UInt8], contentType: String, subject: CallSubject = .none) async -> FormatOutcome {
        let call = PluginCall(operation: .format, instance: id, document: document, body: body, contentType: contentType, subject: subject)
        switch await executor.call(call) {
        case .output(let output):
            switch output.status {
            case HOOKPROXY_OK.rawValue:
                return .send(
                    body: output.body, contentType: output.contentType.isEmpty ? "application/json" : output.contentType,
                    headers: output.headers)
            case HOOKPROXY_SKIP.rawValue:
                return .skip(reason: output.error)
            case HOOKPROXY_ERROR_TRANSIENT.rawValue:
                return .failed(message: describe(output), permanent: false)
            default:
                return .failed(message: describe(output), permanent: true)
            }
        case .aborted(let reason): return .aborted(reason: reason)
        case .unavailable(let reason): return .unavailable(reason: reason)
        case .cancelled: return .cancelled
        }
    }

    /// Calls `on_map` with the mapper document and the raw body.
    func map(document: [UInt8], body: [UInt8], contentType: String, subject: CallSubject = .none) async -> MapOutcome {
        let call = PluginCall(operation: .map, instance: id, document: document, body: body, contentType: contentType, subject: subject)
        switch await executor.call(call) {
        case .output(let output):
            guard output.status == HOOKPROXY_OK.rawValue else {
                return .failed(message: describe(output), permanent: output.status != HOOKPROXY_ERROR_TRANSIENT.rawValue)
            }
            guard let fields = try? JSONValue(parsing: output.body).objectValue else {
                return .failed(message: "plugin '\(plugin.name)' returned fields that are not a JSON object", permanent: true)
            }
            return .fields(fields)
        case .aborted(let reason): return .aborted(reason: reason)
        case .unavailable(let reason): return .failed(message: reason, permanent: false)
        case .cancelled: return .failed(message: "the server is shutting down", permanent: false)
        }
    }

    private func describe(_ output: PluginOutput) -> String {
        output.error.isEmpty ? "plugin '\(plugin.name)' failed (status \(output.status))" : output.error
    }
}

/// A plugin that refused to create an instance, with its reason.
struct PluginInstanceError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
