import ArgumentParser
import Foundation
import PluginKit

/// Paging and output of the listing commands.
struct PageOptions: ParsableArguments {
    @Option(help: "How many to show (1-500).")
    var limit = 50

    @Option(help: "Continue after this cursor (printed after a full page).")
    var cursor: String?

    @Flag(help: "Print JSON (the admin API's shape) instead of a table.")
    var json = false

    func validate() throws {
        guard (1...AdminQuery.maximumLimit).contains(limit) else { throw ValidationError("--limit must be from 1 to 500") }
    }
}

/// `hookproxy events`: stored events, newest first, with their current deliveries. Reads the store directly.
struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "List stored events, newest first, with the state of each delivery (reads the store).")

    @OptionGroup var options: GlobalOptions
    @OptionGroup var filters: FilterOptions

    @OptionGroup var page: PageOptions

    func run() async throws {
        let config = try options.loadConfig()
        let filter = try filters.filter()
        let (cursor, limit) = (page.cursor, page.limit)
        let found = try await options.withStore(config, command: "events") { try await $0.listEvents(filter, cursor: cursor, limit: limit) }
        if page.json {
            print(EventJSON.page(found, named: "events", EventJSON.summary).serialized())
            return
        }
        let rows =
            [["ID", "RECEIVED", "SOURCE", "DELIVERIES"]]
            + found.items.map { event in
                [
                    event.id, CLITime.text(event.receivedAt), event.source,
                    event.deliveries.isEmpty
                        ? "-" : event.deliveries.map { "\($0.destination):\($0.status.rawValue)" }.joined(separator: " "),
                ]
            }
        print(found.items.isEmpty ? "(no events match)" : TextTable.render(rows))
        if let next = found.nextCursor { print("more: --cursor \(next)") }
    }
}

/// `hookproxy deliveries`: current deliveries by status and destination, newest first. Reads the store directly.
struct DeliveriesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deliveries", abstract: "List deliveries (e.g. --status dead), newest first, with their last error (reads the store).")

    @OptionGroup var options: GlobalOptions
    @OptionGroup var filters: FilterOptions

    @OptionGroup var page: PageOptions

    func run() async throws {
        let config = try options.loadConfig()
        let filter = try filters.filter()
        let (cursor, limit) = (page.cursor, page.limit)
        let found = try await options.withStore(config, command: "deliveries") {
            try await $0.listDeliveries(filter, cursor: cursor, limit: limit)
        }
        if page.json {
            print(EventJSON.page(found, named: "deliveries", EventJSON.summary).serialized())
            return
        }
        let rows =
            [["ID", "EVENT", "SOURCE", "DESTINATION", "STATUS", "ATTEMPTS", "NEXT ATTEMPT", "LAST ERROR"]]
            + found.items.map { delivery in
                [
                    delivery.id, delivery.eventID, delivery.source, delivery.destination, delivery.status.rawValue,
                    String(delivery.attempts),
                    CLITime.text(delivery.nextAttemptAt), delivery.lastError.map { String($0.prefix(60)) } ?? "-",
                ]
            }
        print(found.items.isEmpty ? "(no deliveries match)" : TextTable.render(rows))
        if let next = found.nextCursor { print("more: --cursor \(next)") }
    }
}

/// `hookproxy show ID`: one event with its payload, mapped fields, every delivery and every attempt.
struct ShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show one event: payload, mapped fields, every delivery and every attempt (reads the store).")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "The event id.")
    var eventID: String

    @Flag(help: "Print JSON (the admin API's shape).")
    var json = false

    func run() async throws {
        let config = try options.loadConfig()
        let eventID = self.eventID
        guard let detail = try await options.withStore(config, command: "show", { try await $0.eventDetail(id: eventID) }) else {
            throw CLIFailure.runtime("\(eventID): no such event")
        }
        if json {
            print(EventJSON.detail(detail).serialized())
            return
        }
        let event = detail.event
        var lines = [
            "event     \(event.id)", "source    \(event.source)", "received  \(Clock.rfc3339(milliseconds: event.receivedAt))",
            "type      \(event.contentType.isEmpty ? "-" : event.contentType)",
        ]
        if let key = detail.idempotencyKey { lines.append("key       \(key)") }
        lines.append("fields    \((try? JSONValue(parsing: event.fieldsJSON))?.serialized() ?? event.fieldsJSON)")
        let body = String(validating: event.body, as: UTF8.self) ?? "(\(event.body.count) bytes, not UTF-8)"
        lines.append("body      \(body.count > 2000 ? String(body.prefix(2000)) + "… (\(event.body.count) bytes)" : body)")
        for delivery in detail.deliveries {
            lines.append("")
            var head = "delivery  \(delivery.id) → \(delivery.destination): \(delivery.status.rawValue), \(delivery.attempts) attempt(s)"
            if let next = delivery.nextAttemptAt, delivery.status == .retrying || delivery.status == .pending {
                head += ", next \(Clock.rfc3339(milliseconds: next))"
            }
            if let replayOf = delivery.replayOf { head += ", replay of \(replayOf)" }
            lines.append(head)
            if let error = delivery.lastError { lines.append("          last error: \(error)") }
            for attempt in delivery.history {
                var line = "  #\(attempt.number) \(Clock.rfc3339(milliseconds: attempt.startedAt)) \(attempt.durationMilliseconds) ms"
                line += attempt.httpStatus.map { " HTTP \($0)" } ?? ""
                line += attempt.error.map { " — \($0)" } ?? ""
                lines.append(line)
                let response = String(decoding: attempt.responseBody.prefix(200), as: UTF8.self)
                    .replacingOccurrences(of: "\n", with: " ")
                if !response.isEmpty { lines.append("     response: \(response)") }
            }
        }
        print(lines.joined(separator: "\n"))
    }
}
