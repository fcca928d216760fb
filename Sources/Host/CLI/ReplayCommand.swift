import ArgumentParser
import Logging

/// `hookproxy replay EVENT_ID...`: schedules fresh deliveries of stored events. Works whether or not a server is
/// running: it writes to the store, and a running server picks the work up within a second.
struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Re-deliver stored events to their destinations (works with or without a running server).")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "The ids of the events to replay.")
    var eventIDs: [String]

    func validate() throws {
        guard !eventIDs.isEmpty else { throw ValidationError("give at least one EVENT_ID") }
    }

    func run() async throws {
        var logger = options.bootstrapLogging()
        logger.logLevel = .warning
        let config = try options.loadConfig()
        let store: SQLiteStore
        switch config.storage.backend {
        case .sqlite(let path):
            do {
                store = try SQLiteStore(path: path, maximumSize: config.storage.maximumSize)
            } catch {
                throw CLIFailure.runtime("hookproxy replay: \(error)")
            }
        }
        let replayer = Replayer(store: store, config: config)
        var failures: [String] = []
        for id in eventIDs {
            do {
                let deliveries = try await replayer.replay(eventID: id)
                print("\(id): scheduled \(deliveries.count) deliver\(deliveries.count == 1 ? "y" : "ies")")
            } catch Replayer.Failure.notFound {
                failures.append("\(id): no such event")
            } catch Replayer.Failure.disabled(let source) {
                failures.append("\(id): replay is disabled for source '\(source)' (replay: false)")
            } catch {
                failures.append("\(id): \(error)")
            }
        }
        try? await store.close()
        if !failures.isEmpty { throw CLIFailure.runtime(failures.joined(separator: "\n")) }
    }
}
