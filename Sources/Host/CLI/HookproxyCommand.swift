import ArgumentParser
import Foundation
import Logging

/// `hookproxy`: the server and the operator's command line in one executable.
///
/// Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
@main
struct HookproxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hookproxy",
        abstract: "A self-hosted webhook proxy: receive, store durably, format with plugins, deliver with retries.",
        version: HookproxyVersion.current,
        subcommands: [
            ServeCommand.self, CheckCommand.self, PluginsCommand.self, EventsCommand.self, ShowCommand.self, DeliveriesCommand.self,
            ReplayCommand.self, PreviewCommand.self, DestinationsCommand.self, PluginWorkerCommand.self,
        ])

    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as CLIFailure {
            FileHandle.standardError.write(Data((error.message + "\n").utf8))
            Foundation.exit(error.exitCode)
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

/// A command's failure: the message printed to standard error and the exit code.
struct CLIFailure: Error {
    let message: String
    let exitCode: Int32

    /// A usage or configuration error (exit 2).
    static func usage(_ message: String) -> CLIFailure { CLIFailure(message: message, exitCode: 2) }
    /// A runtime failure (exit 1).
    static func runtime(_ message: String) -> CLIFailure { CLIFailure(message: message, exitCode: 1) }
}

/// Options every command that reads the configuration shares.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "The configuration file (default: $HOOKPROXY_CONFIG, else ./sources.yaml).")
    var config: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(name: .long, help: "Log format on standard error: text, or json (one object per line).")
    var logFormat: String = "text"

    /// The configuration file to read.
    var configFile: String {
        config ?? ProcessInfo.processInfo.environment["HOOKPROXY_CONFIG"].flatMap { $0.isEmpty ? nil : $0 } ?? "sources.yaml"
    }

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        guard ["text", "json"].contains(logFormat) else { throw ValidationError("--log-format must be text or json") }
    }

    /// Sets up logging to standard error and returns the root logger.
    func bootstrapLogging() -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        let json = logFormat == "json"
        LoggingSystem.bootstrap { label in
            if json { return JSONLogHandler(label: label, level: level) }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "hookproxy")
        logger.logLevel = level
        return logger
    }

    /// Loads the configuration (without plugins), or fails with every problem (exit 2).
    func loadConfig() throws -> HookproxyConfig {
        do {
            return try ConfigLoader().load(file: configFile)
        } catch {
            throw CLIFailure.usage(error.description)
        }
    }

    /// Loads the configuration and plugins, or fails with every problem (exit 2).
    func loadRuntime(logger: Logger) async throws -> Runtime {
        do {
            return try await Runtime.load(file: configFile, logger: logger)
        } catch {
            throw CLIFailure.usage(error.description)
        }
    }
}
