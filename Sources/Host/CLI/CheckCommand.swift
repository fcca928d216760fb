import ArgumentParser
import Logging

/// `hookproxy check`: validates the configuration, resolves secrets, loads every plugin and creates every instance.
struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate the configuration and plugins; print every problem with file:line, exit 0 when all is well.")

    @OptionGroup var options: GlobalOptions

    func run() async throws {
        var logger = options.bootstrapLogging()
        logger.logLevel = .error
        let config = try options.loadConfig()
        let runtime: Runtime
        do {
            runtime = try await Runtime.make(config: config, logger: logger)
        } catch {
            for refusal in await PluginLoader.discover(directory: config.plugins.directory, logger: logger).refusals {
                print("warning: \(refusal)")
            }
            throw CLIFailure.usage(error.description)
        }
        defer { runtime.plugins.shutdown() }
        let catalog = runtime.catalog
        for refusal in catalog.refusals { print("warning: \(refusal)") }
        let formatters = Set(config.destinations.values.map(\.formatter)).sorted().joined(separator: ", ")
        let inProcess = catalog.plugins.keys.filter { config.plugins.settings(for: $0).isolation == .inProcess }.sorted()
        print(
            "\(config.file): ok: \(config.sources.count) source(s), \(config.destinations.count) destination(s), "
                + "\(catalog.plugins.count) plugin(s) loaded; formatters in use: \(formatters.isEmpty ? "none" : formatters); "
                + "plugins in process: \(inProcess.isEmpty ? "none" : inProcess.joined(separator: ", "))")
    }
}
