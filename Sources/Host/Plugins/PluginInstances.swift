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

    /// Creates every instance `config` needs from the plugins in `catalog`; returns the problems instead when any.
    static func make(config: HookproxyConfig, catalog: PluginLoader.Catalog) -> Result<PluginInstances, ConfigError> {
        var problems: [ConfigProblem] = []

        func instance(plugin name: String, capability: String, options: JSONValue, at location: ConfigLocation) -> PluginInstance? {
            func report(_ message: String) {
                problems.append(ConfigProblem(file: location.file, line: location.line, key: location.key, message: message))
            }
            guard let plugin = catalog.plugins[name] else {
                var message = "no loaded plugin is named '\(name)'"
                if let close = PluginOptions.closest(to: name, in: catalog.plugins.keys) { message += " (did you mean '\(close)'?)" }
                let able = catalog.plugins.values.filter { $0.capabilityNames.contains(capability) }.map(\.name).sorted()
                message += "; loaded \(capability)s: \(able.isEmpty ? "none" : able.joined(separator: ", "))"
                if !catalog.refusals.isEmpty { message += "; \(catalog.refusals.count) plugin file(s) were refused, see above" }
                report(message)
                return nil
            }
            guard plugin.capabilityNames.contains(capability) else {
                report(
                    "plugin '\(name)' (\(plugin.file)) is not a \(capability); it is a \(plugin.capabilityNames.joined(separator: " and "))"
                )
                return nil
            }
            do {
                return try PluginInstance(plugin: plugin, options: options)
            } catch {
                report("plugin '\(name)' rejected its options: \(error.message)")
                return nil
            }
        }

        var byDestination: [String: PluginInstance] = [:]
        for (name, destination) in config.destinations.sorted(by: { $0.key < $1.key }) {
            byDestination[name] = instance(
                plugin: destination.formatter, capability: "formatter", options: destination.options,
                at: destination.location)
        }
        var byRoute: [RouteKey: PluginInstance] = [:]
        var bySource: [String: PluginInstance] = [:]
        for (name, source) in config.sources.sorted(by: { $0.key < $1.key }) {
            for route in source.routes where route.overridesFormatter {
                byRoute[RouteKey(source: name, destination: route.destination)] = instance(
                    plugin: route.formatter, capability: "formatter", options: route.options, at: route.location)
            }
            if let mapper = source.mapper {
                bySource[name] = instance(plugin: mapper.name, capability: "mapper", options: mapper.options, at: mapper.location)
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
