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
        let catalog = PluginLoader.discover(directory: config.plugins.directory, logger: logger)
        for refusal in catalog.refusals { print("warning: \(refusal)") }
        switch PluginInstances.make(config: config, catalog: catalog) {
        case .failure(let error):
            throw CLIFailure.usage(error.description)
        case .success:
            let formatters = Set(config.destinations.values.map(\.formatter)).sorted().joined(separator: ", ")
            print(
                "\(config.file): ok: \(config.sources.count) source(s), \(config.destinations.count) destination(s), "
                    + "\(catalog.plugins.count) plugin(s) loaded; formatters in use: \(formatters.isEmpty ? "none" : formatters)")
        }
    }
}
