import Logging
import Synchronization

/// A configuration made live: the validated config plus the plugin instances it needs.
struct Runtime: Sendable {
    let config: HookproxyConfig
    let catalog: PluginLoader.Catalog
    let instances: PluginInstances

    /// Loads `file`, discovers plugins and creates every instance. Throws every problem found.
    static func load(file: String, loader: ConfigLoader = ConfigLoader(), logger: Logger) throws(ConfigError) -> Runtime {
        let config = try loader.load(file: file)
        return try make(config: config, logger: logger)
    }

    /// Discovers plugins for `config` and creates every instance.
    static func make(config: HookproxyConfig, logger: Logger) throws(ConfigError) -> Runtime {
        let catalog = PluginLoader.discover(directory: config.plugins.directory, logger: logger)
        switch PluginInstances.make(config: config, catalog: catalog) {
        case .success(let instances): return Runtime(config: config, catalog: catalog, instances: instances)
        case .failure(let error): throw error
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
