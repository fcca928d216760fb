import PluginKit

/// The plugin instances one configuration needs: a formatter instance per destination (and per source that overrides
/// a destination's formatter or options) and a mapper instance per source that names one.
///
/// Built once when a configuration is loaded; bad options, unknown plugins and plugins without the needed capability
/// are configuration problems located at the `formatter:` / `mapper:` key.
final class PluginInstances: Sendable {
    private let byDestination: [String: PluginInstance]
    private let byRoute: [RouteKey: PluginInstance]
    private let bySource: [String: PluginInstance]

    private struct RouteKey: Hashable {
        var source: String
        var destination: String
    }

    private init(byDestination: [String: PluginInstance], byRoute: [RouteKey: PluginInstance], bySource: [String: PluginInstance]) {
        self.byDestination = byDestination
        self.byRoute = byRoute
        self.bySource = bySource
    }

    /// Creates every instance `config` needs from the plugins in `host`'s catalog, on their executors; returns the
    /// problems instead when any.
    static func make(config: HookproxyConfig, host: PluginHost) async -> Result<PluginInstances, ConfigError> {
        var problems: [ConfigProblem] = []
        let catalog = host.catalog

        func report(_ message: String, at location: ConfigLocation) {
            problems.append(ConfigProblem(file: location.file, line: location.line, key: location.key, message: message))
        }

        func instance(plugin name: String, capability: String, options: JSONValue, at location: ConfigLocation) async -> PluginInstance? {
            guard let plugin = catalog.plugins[name] else {
                var message = "no loaded plugin is named '\(name)'"
                if let close = PluginOptions.closest(to: name, in: catalog.plugins.keys) { message += " (did you mean '\(close)'?)" }
                let able = catalog.plugins.values.filter { $0.capabilityNames.contains(capability) }.map(\.name).sorted()
                message += "; loaded \(capability)s: \(able.isEmpty ? "none" : able.joined(separator: ", "))"
                if !catalog.refusals.isEmpty { message += "; \(catalog.refusals.count) plugin file(s) were refused, see above" }
                report(message, at: location)
                return nil
            }
            guard plugin.capabilityNames.contains(capability) else {
                report(
                    "plugin '\(name)' (\(plugin.file)) is not a \(capability); it is a \(plugin.capabilityNames.joined(separator: " and "))",
                    at: location)
                return nil
            }
            do {
                return try await PluginInstance.make(options: options, executor: try await host.executor(for: plugin))
            } catch {
                report("plugin '\(name)' rejected its options: \(error.message)", at: location)
                return nil
            }
        }

        for (name, override) in config.plugins.overrides.sorted(by: { $0.key < $1.key }) where catalog.plugins[name] == nil {
            let hint = PluginOptions.closest(to: name, in: catalog.plugins.keys).map { " (did you mean '\($0)'?)" } ?? ""
            report("no loaded plugin is named '\(name)'\(hint)", at: override.location)
        }
        var byDestination: [String: PluginInstance] = [:]
        for (name, destination) in config.destinations.sorted(by: { $0.key < $1.key }) {
            byDestination[name] = await instance(
                plugin: destination.formatter, capability: "formatter", options: destination.options,
                at: destination.location)
        }
        var byRoute: [RouteKey: PluginInstance] = [:]
        var bySource: [String: PluginInstance] = [:]
        for (name, source) in config.sources.sorted(by: { $0.key < $1.key }) {
            for route in source.routes where route.overridesFormatter {
                byRoute[RouteKey(source: name, destination: route.destination)] = await instance(
                    plugin: route.formatter, capability: "formatter", options: route.options, at: route.location)
            }
            if let mapper = source.mapper {
                bySource[name] = await instance(plugin: mapper.name, capability: "mapper", options: mapper.options, at: mapper.location)
            }
        }
        if !problems.isEmpty { return .failure(ConfigError(problems)) }
        return .success(PluginInstances(byDestination: byDestination, byRoute: byRoute, bySource: bySource))
    }

    /// The formatter for events of `source` sent to `destination`: the source's override when it has one, else the
    /// destination's own.
    func formatter(source: String, destination: String) -> PluginInstance? {
        byRoute[RouteKey(source: source, destination: destination)] ?? byDestination[destination]
    }

    /// The mapper of `source`, when it names one.
    func mapper(source: String) -> PluginInstance? { bySource[source] }
}
