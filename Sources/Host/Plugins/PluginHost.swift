import Logging
import Synchronization

/// The plugins of one configuration, as they run: one executor per plugin in use (a ``WorkerPool`` or an
/// ``InProcessPool``, as `plugins.isolation` and `plugins.overrides` say), created on first use and shared by every
/// instance of that plugin. Stopped when the configuration is replaced and its last call is over, or at shutdown.
final class PluginHost: Sendable {
    let config: PluginsConfig
    let catalog: PluginLoader.Catalog
    private let journal: CallJournal?
    private let metrics: HookproxyMetrics?
    private let logger: Logger
    private let executors = Mutex<[String: any PluginExecutor]>([:])

    init(config: PluginsConfig, catalog: PluginLoader.Catalog, journal: CallJournal?, metrics: HookproxyMetrics?, logger: Logger) {
        self.config = config
        self.catalog = catalog
        self.journal = journal
        self.metrics = metrics
        self.logger = logger
    }

    /// The executor of `plugin`, started on first use.
    func executor(for plugin: LoadedPlugin) async throws(PluginInstanceError) -> any PluginExecutor {
        if let existing = executors.withLock({ $0[plugin.name] }) { return existing }
        let executor = try await Self.makeExecutor(
            plugin: plugin, settings: config.settings(for: plugin.name), journal: journal, metrics: metrics, logger: logger)
        return executors.withLock { executors in
            if let existing = executors[plugin.name] {
                executor.shutdown()
                return existing
            }
            executors[plugin.name] = executor
            return executor
        }
    }

    /// A new executor for `plugin` as `settings` say: worker processes, or threads of its own in process.
    static func makeExecutor(
        plugin: LoadedPlugin, settings: PluginSettings, journal: CallJournal? = nil, metrics: HookproxyMetrics? = nil, logger: Logger
    ) async throws(PluginInstanceError) -> any PluginExecutor {
        switch settings.isolation {
        case .process:
            return WorkerPool(plugin: plugin, settings: settings, metrics: metrics, logger: logger)
        case .inProcess:
            // Opening the library runs its code: on a thread of its own, not the cooperative pool.
            let opened = await DedicatedThread.run { PluginLoader.openNative(file: plugin.file) }
            switch opened {
            case .success(let native):
                return InProcessPool(native: native, settings: settings, journal: journal, metrics: metrics, logger: logger)
            case .failure(let refusal):
                throw PluginInstanceError(message: "plugin '\(plugin.name)' cannot be loaded in process: \(refusal.reason)")
            }
        }
    }

    /// The settings of plugin `name`.
    func settings(for name: String) -> PluginSettings { config.settings(for: name) }

    /// Each running plugin's workers or threads.
    func health() -> [String: PluginHealth] {
        executors.withLock { $0.mapValues { $0.health() } }
    }

    /// Stops every executor: workers are told to exit and killed if they do not.
    func shutdown() {
        for executor in executors.withLock({ Array($0.values) }) { executor.shutdown() }
    }

    deinit { shutdown() }
}
