import Logging
import PluginKit
import ServiceLifecycle
import Synchronization
import UnixSignals

/// Hot reload: reads the configuration file again, discovers plugins again (new `.so` files are picked up), creates
/// every plugin instance, and only when all of that succeeded swaps the runtime in one step. Requests and deliveries
/// in progress keep the runtime they started with; new ones use the new one. An invalid file changes nothing.
///
/// A few settings are fixed while the server runs (listen addresses, header limits, storage); a reload that changes
/// them applies the rest and reports those as needing a restart.
final class Reloader: Sendable {
    struct Report: Sendable {
        var sources: Int
        var destinations: Int
        var plugins: [String]
        var refusedPlugins: [PluginRefusal]
        /// Changed settings that take effect only at the next start.
        var restartRequired: [String]
    }

    private let holder: RuntimeHolder
    private let logger: Logger
    /// Where the new configuration's in-process plugin calls are noted.
    private let journal: CallJournal?
    /// One reload at a time.
    private let serial = AsyncLock()
    /// Told about each reload that succeeded (alerts use it for refused plugins).
    private let observers = Mutex<[@Sendable (Report) -> Void]>([])

    private let metrics: HookproxyMetrics

    init(holder: RuntimeHolder, logger: Logger, metrics: HookproxyMetrics, journal: CallJournal? = nil) {
        self.holder = holder
        self.logger = logger
        self.metrics = metrics
        self.journal = journal
    }

    func observe(_ observer: @escaping @Sendable (Report) -> Void) { observers.withLock { $0.append(observer) } }

    /// Reloads from the file the running configuration came from; throws every problem when the new file is invalid.
    func reload() async throws(ConfigError) -> Report {
        let report: Report
        do {
            report = try await serial.withLock { () async throws(ConfigError) -> Report in
                let old = holder.runtime
                let new = try await Runtime.load(file: old.config.file, logger: logger, journal: journal, metrics: metrics)
                holder.replace(with: new)
                return Report(
                    sources: new.config.sources.count, destinations: new.config.destinations.count,
                    plugins: new.catalog.plugins.keys.sorted(), refusedPlugins: new.catalog.refusals,
                    restartRequired: Self.fixedSettingsChanged(from: old.config, to: new.config))
            }
        } catch {
            metrics.increment("hookproxy_config_reloads_total", [("result", "failed")])
            logger.error("reload refused; the running configuration is unchanged", metadata: ["problems": "\(error.problems.count)"])
            for problem in error.problems { logger.error("\(problem)") }
            throw error
        }
        metrics.increment("hookproxy_config_reloads_total", [("result", "ok")])
        logger.notice(
            "configuration reloaded",
            metadata: [
                "sources": "\(report.sources)", "destinations": "\(report.destinations)",
                "restart_required": "\(report.restartRequired.joined(separator: ","))",
            ])
        for refusal in report.refusedPlugins { logger.warning("\(refusal)") }
        for observer in observers.withLock({ $0 }) { observer(report) }
        return report
    }

    /// Settings read once at start-up that differ between `old` and `new`.
    static func fixedSettingsChanged(from old: HookproxyConfig, to new: HookproxyConfig) -> [String] {
        var changed: [String] = []
        if old.server.listen != new.server.listen { changed.append("server.listen") }
        if old.server.adminListen != new.server.adminListen { changed.append("server.admin_listen") }
        if old.server.maxHeaders != new.server.maxHeaders { changed.append("server.max_headers") }
        if old.server.maxHeaderBytes != new.server.maxHeaderBytes { changed.append("server.max_header_bytes") }
        if old.server.readTimeout != new.server.readTimeout { changed.append("server.read_timeout (idle timeout)") }
        if old.storage.backend != new.storage.backend { changed.append("storage.url") }
        if old.storage.maximumSize != new.storage.maximumSize { changed.append("storage.max_size") }
        if old.storage.instanceTimeout != new.storage.instanceTimeout { changed.append("storage.instance_timeout") }
        if old.storage.maximumConnections != new.storage.maximumConnections { changed.append("storage.max_connections") }
        if old.storage.journalPath != new.storage.journalPath { changed.append("storage.journal") }
        return changed
    }
}

/// Reloads on SIGHUP until graceful shutdown.
struct ReloadOnSignal: Service {
    let reloader: Reloader

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            // Problems are logged by the reloader; the old configuration keeps running.
            _ = try? await reloader.reload()
        }
    }
}
