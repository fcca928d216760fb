import Foundation
import GRDB

/// The records the admin API and the CLI read, and the replays they schedule, on SQLite: the shared queries
/// (``StoreQueries``) run in one read or write transaction, assembled by the shared code (`StoreAssembly.swift`).
extension SQLiteStore {
    func eventDetail(id: String) async throws(StoreError) -> EventDetail? {
        try await read { db in
            guard let event = try db.rows(StoreQueries.event(id: id)).first else { return nil }
            return try EventDetail(
                event: event, deliveries: try db.rows(StoreQueries.deliveries(ofEvent: id)),
                attempts: try db.rows(StoreQueries.attempts(ofEvent: id)))
        }
    }

    func queueDepths() async throws(StoreError) -> [String: [DeliveryStatus: Int]] {
        try await read { db in try StoreAssembly.queueDepths(try db.rows(StoreQueries.queueDepths)) }
    }

    func listEvents(_ filter: RecordFilter, cursor: String?, limit: Int) async throws(StoreError) -> Page<EventSummary> {
        try await read { db in
            let events = try db.rows(StoreQueries.eventPage(filter, cursor: cursor, limit: limit))
            let ids = try events.map { row throws(StoreError) in try row.text("id") }
            let deliveries = ids.isEmpty ? [] : try db.rows(StoreQueries.currentDeliveries(ofEvents: ids))
            return try Page(events: events, deliveries: deliveries, limit: limit)
        }
    }

    func listDeliveries(_ filter: RecordFilter, cursor: String?, limit: Int) async throws(StoreError) -> Page<DeliverySummary> {
        try await read { db in
            try Page(deliveries: try db.rows(StoreQueries.deliveryPage(filter, cursor: cursor, limit: limit)), limit: limit)
        }
    }

    func replayCandidates(_ filter: RecordFilter, createdBefore: Int64, cursor: String?, limit: Int) async throws(StoreError) -> Page<
        DeliverySummary
    > {
        try await read { db in
            let query = StoreQueries.replayCandidatePage(filter, createdBefore: createdBefore, cursor: cursor, limit: limit)
            return try Page(deliveries: try db.rows(query), limit: limit)
        }
    }

    func replay(eventID: String, fallbackDestinations: [String], now: Int64) async throws(StoreError) -> [String]? {
        try await write { db in
            guard try !db.rows(StoreQueries.event(id: eventID)).isEmpty else { return nil }
            let targets = try StoreAssembly.replayTargets(
                try db.rows(StoreQueries.replayableDeliveries(ofEvent: eventID)), fallback: fallbackDestinations)
            var ids: [String] = []
            for target in targets {
                let id = EventID.make()
                try db.execute(
                    StoreQueries.insertDelivery(
                        id: id, eventID: eventID, destination: target.destination, replayOf: target.replayOf, now: now))
                ids.append(id)
            }
            return ids
        }
    }

    func replay(deliveries: [DeliverySummary], now: Int64) async throws(StoreError) -> [String] {
        guard !deliveries.isEmpty else { return [] }
        return try await write { db in
            var ids: [String] = []
            for delivery in deliveries {
                // Skipped when a replay superseded it meanwhile.
                guard try db.rows(StoreQueries.supersedes(delivery.id)).isEmpty else { continue }
                let id = EventID.make()
                try db.execute(
                    StoreQueries.insertDelivery(
                        id: id, eventID: delivery.eventID, destination: delivery.destination, replayOf: delivery.id, now: now))
                ids.append(id)
            }
            return ids
        }
    }

    func suspendedDestinations() async throws(StoreError) -> Set<String> {
        try await read { db in
            var names = Set<String>()
            for row in try db.rows(StoreQueries.suspendedDestinations) { names.insert(try row.text("destination")) }
            return names
        }
    }
}

// MARK: The dialect

extension Row: StoreRow {
    /// The column's value with its storage class, for checking: a row read as SQLite steps (``Database/map(_:_:)``)
    /// would otherwise convert text where a number belongs to 0 without a word.
    private func value(_ column: String) throws(StoreError) -> DatabaseValue {
        guard hasColumn(column) else { throw StoreError.malformedRow(column, "is missing") }
        do { return try decode(DatabaseValue.self, forColumn: column) } catch { throw StoreError.malformedRow(column, "cannot be read") }
    }

    func optionalText(_ column: String) throws(StoreError) -> String? {
        switch try value(column).storage {
        case .null: return nil
        case .string(let text): return text
        case .blob(let data):
            guard let text = String(validating: data, as: UTF8.self) else { throw StoreError.malformedRow(column, "is not text") }
            return text
        case .int64, .double: throw StoreError.malformedRow(column, "is not text")
        }
    }

    func optionalInteger(_ column: String) throws(StoreError) -> Int64? {
        switch try value(column).storage {
        case .null: return nil
        case .int64(let integer): return integer
        case .double(let number):
            guard let integer = Int64(exactly: number) else { throw StoreError.malformedRow(column, "is not an integer") }
            return integer
        case .string, .blob: throw StoreError.malformedRow(column, "is not an integer")
        }
    }

    func optionalBytes(_ column: String) throws(StoreError) -> [UInt8]? {
        guard hasColumn(column) else { throw StoreError.malformedRow(column, "is missing") }
        // Copied once, from SQLite's buffer (a row read by ``Database/map(_:_:)``) or the row's own copy.
        do { return try withUnsafeData(named: column) { data in data.map { [UInt8]($0) } } } catch {
            throw StoreError.malformedRow(column, "is not bytes")
        }
    }
}

extension StoreSQL {
    /// SQLite's form: `?` for each value, a list as `(?, ?, …)`.
    var sqlite: (sql: String, arguments: StatementArguments) {
        var arguments: [(any DatabaseValueConvertible)?] = []
        let sql = render { value, _ in
            switch value {
            case .text(let text):
                arguments.append(text)
                return "?"
            case .integer(let integer):
                arguments.append(integer)
                return "?"
            case .textList(let texts):
                arguments += texts.map { $0 as (any DatabaseValueConvertible)? }
                return "(\(databaseQuestionMarks(count: texts.count)))"
            }
        }
        return (sql, StatementArguments(arguments))
    }
}

extension Database {
    /// Runs a shared query; its statement is prepared once per connection and SQL text.
    func rows(_ query: StoreSQL) throws -> [Row] {
        let (sql, arguments) = query.sqlite
        return try Row.fetchAll(cachedStatement(sql: sql), arguments: arguments)
    }

    /// Reads each row of `statement` as SQLite steps to it, with `read`. The rows are not copied, and a column is found
    /// in the statement's own index of its names; rows that `rows(_:)` returns are copies whose every column lookup
    /// lowercases each column's name (a claim spent a quarter of its time there).
    func map<T>(_ statement: Statement, arguments: StatementArguments, _ read: (Row) throws -> T) throws -> [T] {
        var values: [T] = []
        let cursor = try Row.fetchCursor(statement, arguments: arguments)
        while let row = try cursor.next() { values.append(try read(row)) }
        return values
    }

    /// ``map(_:arguments:_:)`` for a shared query.
    func map<T>(_ query: StoreSQL, _ read: (Row) throws -> T) throws -> [T] {
        let (sql, arguments) = query.sqlite
        return try map(cachedStatement(sql: sql), arguments: arguments, read)
    }

    func execute(_ query: StoreSQL) throws {
        let (sql, arguments) = query.sqlite
        try cachedStatement(sql: sql).execute(arguments: arguments)
    }
}
