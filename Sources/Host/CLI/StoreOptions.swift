import ArgumentParser
import Foundation
import Logging

extension GlobalOptions {
    /// Runs `body` with the configured store open, and closes it afterwards.
    func withStore<T>(_ config: HookproxyConfig, command: String, _ body: (any EventStore) async throws -> T) async throws -> T {
        let store = try await openStore(config, command: command)
        return try await withStoreServices(store) { try await body(store) }
    }

    /// Opens the configured store directly (no server needed: SQLite allows a second process beside a running server,
    /// and PostgreSQL any number).
    func openStore(_ config: HookproxyConfig, command: String) async throws -> any EventStore {
        do {
            return try await openEventStore(
                config.storage, logger: Logger(label: "hookproxy.\(command)", factory: { _ in SwiftLogNoOpLogHandler() }))
        } catch {
            throw CLIFailure.runtime("hookproxy \(command): \(error)")
        }
    }
}

/// The filters shared by `events`, `deliveries` and `replay`.
struct FilterOptions: ParsableArguments {
    @Option(help: "Only events of this source.")
    var source: String?

    @Option(help: "Only deliveries to this destination (events: with such a delivery).")
    var destination: String?

    @Option(help: "Only deliveries in this status: pending, in_flight, delivered, retrying, dead, skipped.")
    var status: String?

    @Option(help: "Only events received at or after this time: RFC 3339 (2026-11-21T12:00:00Z) or a duration ago (90m, 2h, 7d).")
    var since: String?

    @Option(help: "Only events received before this time: RFC 3339 or a duration ago.")
    var until: String?

    var isEmpty: Bool { source == nil && destination == nil && status == nil && since == nil && until == nil }

    func validate() throws {
        _ = try filter()
    }

    /// The filter, with durations counted back from `now` (ms).
    func filter(now: Int64 = Clock.milliseconds()) throws -> RecordFilter {
        var filter = RecordFilter(source: source, destination: destination)
        if let status {
            guard let parsed = DeliveryStatus(rawValue: status) else {
                throw ValidationError("--status must be one of \(DeliveryStatus.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            filter.status = parsed
        }
        filter.since = try since.map { try Self.time($0, option: "--since", now: now) }
        filter.until = try until.map { try Self.time($0, option: "--until", now: now) }
        return filter
    }

    static func time(_ text: String, option: String, now: Int64) throws -> Int64 {
        if let milliseconds = Clock.parse(rfc3339: text) { return milliseconds }
        if let ago = DurationParsing.parse(text) { return now.subtractingSaturated(ago.wholeMilliseconds) }
        throw ValidationError("\(option) must be an RFC 3339 time (2026-11-21T12:00:00Z) or a duration ago (90m, 2h, 7d), not '\(text)'")
    }
}

/// How CLI listings print times: RFC 3339 in UTC, to the second.
enum CLITime {
    static func text(_ milliseconds: Int64?) -> String {
        guard let milliseconds else { return "-" }
        let text = Clock.rfc3339(milliseconds: milliseconds)
        guard let dot = text.firstIndex(of: ".") else { return text }
        return String(text[..<dot]) + "Z"
    }
}
