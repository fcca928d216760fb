import Logging
import Synchronization

/// A configuration made live: the validated config, the plugins as they run, and the instances it needs.
struct Runtime: Sendable {
    let config: HookproxyConfig
    let plugins: PluginHost
    let instances: PluginInstances

    var catalog: PluginLoader.Catalog { plugins.catalog }

    /// Loads `file`, discovers plugins and creates every instance. Throws every problem found.
    static func load(
        file: String, loader: ConfigLoader = ConfigLoader(), logger: Logger, journal: CallJournal? = nil, metrics: HookproxyMetrics? = nil
    ) async throws(ConfigError) -> Runtime {
        let config = try loader.load(file: file)
        return try await make(config: config, logger: logger, journal: journal, metrics: metrics)
    }

    /// Discovers plugins for `config` (each file checked in a probe worker) and creates every instance on its
    /// plugin's executor. `journal` is where in-process plugin calls are noted (the server's); `metrics` counts plugin
    /// crashes, timeouts and restarts.
    static func make(
        config: HookproxyConfig, logger: Logger, journal: CallJournal? = nil, metrics: HookproxyMetrics? = nil
    ) async throws(ConfigError) -> Runtime {
        let catalog = await PluginLoader.discover(
            directory: config.plugins.directory, memoryLimit: config.plugins.defaults.memoryLimit, logger: logger)
        let host = PluginHost(config: config.plugins, catalog: catalog, journal: journal, metrics: metrics, logger: logger)
        switch await PluginInstances.make(config: config, host: host) {
        case .success(let instances): return Runtime(config: config, plugins: host, instances: instances)
        case .failure(let error):
            host.shutdown()
            throw error
        }
    }
}

/// The runtime in force, swapped atomically on reload. Readers take a snapshot and keep using it for the request or
/// delivery at hand, so a reload never changes anything halfway through.
final class RuntimeHolder: Sendable {
    private let current: Mutex<(runtime: Runtime, generation: Int)>

    init(_ runtime: Runtime) { current = Mutex((runtime, 0)) }

    var runtime: Runtime { current.withLock { $0.runtime } }

    /// The runtime and how many times it was replaced: readers that derive state from the configuration (the
    /// delivery engine's lanes) rebuild it only when the generation moves.
    var versioned: (runtime: Runtime, generation: Int) { current.withLock { $0 } }

    func replace(with runtime: Runtime) { current.withLock { $0 = (runtime, $0.generation + 1) } }
}
