import ArgumentParser
import Foundation
import Logging
import PluginKit

/// `hookproxy replay EVENT_ID...` or `hookproxy replay --status dead --since 2h ...`: schedules fresh deliveries of
/// stored events. Works whether or not a server is running: it writes to the store, and a running server picks the
/// work up within a second.
struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Re-deliver stored events, by id or by filter (works with or without a running server).",
        discussion: """
            By id, every destination of each event gets a fresh delivery. By filter, every current, finished delivery \
            (delivered, dead or skipped) matching all the filters gets one; --dry-run only counts them. Sources with \
            `replay: false` are left alone.
            """)

    @OptionGroup var options: GlobalOptions
    @OptionGroup var filters: FilterOptions

    @Flag(help: "Count what a replay by filter would schedule; change nothing.")
    var dryRun = false

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @Argument(help: "The ids of the events to replay (or give filters instead).")
    var eventIDs: [String] = []

    func validate() throws {
        if eventIDs.isEmpty, filters.isEmpty {
            throw ValidationError("give EVENT_IDs, or filters (--source, --destination, --status, --since, --until)")
        }
        if !eventIDs.isEmpty, !filters.isEmpty { throw ValidationError("give EVENT_IDs or filters, not both") }
        if !eventIDs.isEmpty, dryRun { throw ValidationError("--dry-run applies to a replay by filter") }
    }

    func run() async throws {
        var logger = options.bootstrapLogging()
        logger.logLevel = .warning
        let config = try options.loadConfig()
        if eventIDs.isEmpty {
            try await replayByFilter(config)
        } else {
            try await replayEvents(config)
        }
    }

    private func replayEvents(_ config: HookproxyConfig) async throws {
        let eventIDs = self.eventIDs
        let (results, failures) = try await options.withStore(config, command: "replay") { store in
            let replayer = Replayer(store: store, config: config)
            var results: [(String, [String])] = []
            var failures: [String] = []
            for id in eventIDs {
                do {
                    results.append((id, try await replayer.replay(eventID: id)))
                } catch Replayer.Failure.notFound {
                    failures.append("\(id): no such event")
                } catch Replayer.Failure.disabled(let source) {
                    failures.append("\(id): replay is disabled for source '\(source)' (replay: false)")
                } catch {
                    failures.append("\(id): \(error)")
                }
            }
            return (results, failures)
        }
        if json {
            let body: JSONValue = [
                "replayed": .array(results.map { ["id": .string($0.0), "deliveries": .array($0.1.map(JSONValue.string))] }),
                "failed": .array(failures.map(JSONValue.string)),
            ]
            print(body.serialized())
        } else {
            for (id, deliveries) in results { print("\(id): scheduled \(deliveries.count) deliver\(deliveries.count == 1 ? "y" : "ies")") }
        }
        if !failures.isEmpty { throw CLIFailure.runtime(failures.joined(separator: "\n")) }
    }

    private func replayByFilter(_ config: HookproxyConfig) async throws {
        let filter = try filters.filter()
        let (dryRun, quiet) = (self.dryRun, json)
        // A progress line on standard error for long replays (a batch is 500 deliveries), when it is a terminal.
        let progress: @Sendable (Replayer.Summary) -> Void = { summary in
            guard !quiet, isatty(STDERR_FILENO) == 1, summary.matched >= 500 else { return }
            let verb = dryRun ? "counted" : "scheduled \(summary.scheduled) of"
            FileHandle.standardError.write(Data("\r\(verb) \(summary.matched) matching deliveries…".utf8))
        }
        let summary: Replayer.Summary
        do {
            summary = try await options.withStore(config, command: "replay") { store in
                try await Replayer(store: store, config: config).replay(matching: filter, dryRun: dryRun, progress: progress)
            }
        } catch Replayer.Failure.disabled(let source) {
            throw CLIFailure.runtime("replay is disabled for source '\(source)' (replay: false)")
        }
        if !quiet, isatty(STDERR_FILENO) == 1, summary.matched >= 500 { FileHandle.standardError.write(Data("\n".utf8)) }
        if json {
            print(EventJSON.replay(summary, dryRun: dryRun).serialized())
            return
        }
        let perDestination = summary.byDestination.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
        if dryRun {
            print("dry run: \(summary.matched) matching deliveries; would schedule \(summary.byDestination.values.reduce(0, +))")
        } else {
            print("scheduled \(summary.scheduled) deliveries (\(summary.matched) matched)")
        }
        if !perDestination.isEmpty { print("  by destination: \(perDestination)") }
        if summary.skippedReplayDisabled > 0 { print("  skipped \(summary.skippedReplayDisabled): their source has replay: false") }
        if summary.skippedUnknownDestination > 0 {
            print("  skipped \(summary.skippedUnknownDestination): their destination is no longer configured")
        }
    }
}
