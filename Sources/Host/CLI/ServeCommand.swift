import ArgumentParser
import Foundation

/// `hookproxy serve`: runs ingest, delivery and admin until SIGTERM or SIGINT, then drains.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the server (ingest, delivery, admin) until SIGTERM/SIGINT, then drain gracefully.")

    @OptionGroup var options: GlobalOptions

    func run() async throws {
        let logger = options.bootstrapLogging()
        // Free memory stays in the allocator during load and is given back by the server's MemoryTrimmer.
        if !Allocator.tuneForServer() { logger.debug("the C library's allocator cannot be tuned; using its defaults") }
        let config = try options.loadConfig()
        let server: HookproxyServer
        do {
            var configuration = HookproxyServer.Configuration()
            configuration.benchNoopRoute = ProcessInfo.processInfo.environment["HOOKPROXY_BENCH_NOOP_ROUTE"] == "1"
            configuration.releaseStartupPages = true
            server = try await HookproxyServer(config: config, logger: logger, configuration: configuration)
        } catch {
            switch error {
            case .config(let problems): throw CLIFailure.usage(problems.description)
            case .runtime(let message): throw CLIFailure.runtime("hookproxy: \(message)")
            }
        }
        do {
            try await server.run()
        } catch {
            throw CLIFailure.runtime("hookproxy: \(error)")
        }
    }
}
