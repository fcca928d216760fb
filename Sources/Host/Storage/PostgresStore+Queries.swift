import Logging
import PostgresNIO

/// The records the admin API and the CLI read, and the replays they schedule, on PostgreSQL: the shared queries
/// (``StoreQueries``) with the same meaning and order as on SQLite, assembled by the shared code (`StoreAssembly.swift`).
/// Replays lock the event and announce their work to the other instances.
extension PostgresStore {
    func eventDetail(id: String) async throws(StoreError) -> EventDetail? {
        try await run { client, logger in
            guard let event = try await client.rows(StoreQueries.event(id: id), logger: logger).first else { return nil }
            return try EventDetail(
                event: event, deliveries: try await client.rows(StoreQueries.deliveries(ofEvent: id), logger: logger),
                attempts: try await client.rows(StoreQueries.attempts(ofEvent: id), logger: logger))
        }
    }

    func queueDepths() async throws(StoreError) -> [String: [DeliveryStatus: Int]] {
        try await run { client, logger in try StoreAssembly.queueDepths(try await client.rows(StoreQueries.queueDepths, logger: logger)) }
    }

    func listEvents(_ filter: RecordFilter, cursor: String?, limit: Int) async throws(StoreError) -> Page<EventSummary> {
        try await run { client, logger in
            let events = try await client.rows(StoreQueries.eventPage(filter, cursor: cursor, limit: limit), logger: logger)
            let ids = try events.map { row throws(StoreError) in try row.text("id") }
            let deliveries = ids.isEmpty ? [] : try await client.rows(StoreQueries.currentDeliveries(ofEvents: ids), logger: logger)
            return try Page(events: events, deliveries: deliveries, limit: limit)
        }
    }

    func listDeliveries(_ filter: RecordFilter, cursor: String?, limit: Int) async throws(StoreError) -> Page<DeliverySummary> {
        try await run { client, logger in
            try Page(
                deliveries: try await client.rows(StoreQueries.deliveryPage(filter, cursor: cursor, limit: limit), logger: logger),
                limit: limit)
        }
    }

    func replayCandidates(_ filter: RecordFilter, createdBefore: Int64, cursor: String?, limit: Int) async throws(StoreError) -> Page<
        DeliverySummary
    > {
        try await run { client, logger in
            let query = StoreQueries.replayCandidatePage(filter, createdBefore: createdBefore, cursor: cursor, limit: limit)
            return try Page(deliveries: try await client.rows(query, logger: logger), limit: limit)
        }
    }

    func replay(eventID: String, fallbackDestinations: [String], now: Int64) async throws(StoreError) -> [String]? {
        try await transaction { [logger] connection in
            // Locked, so that a purge on another instance cannot take the event away under the new deliveries.
            guard try await !connection.rows("\(StoreQueries.event(id: eventID)) FOR SHARE", logger: logger).isEmpty else { return nil }
            let targets = try StoreAssembly.replayTargets(
                try await connection.rows(StoreQueries.replayableDeliveries(ofEvent: eventID), logger: logger),
                fallback: fallbackDestinations)
            var ids: [String] = []
            for target in targets {
                let id = EventID.make()
                try await connection.execute(
                    StoreQueries.insertDelivery(
                        id: id, eventID: eventID, destination: target.destination, replayOf: target.replayOf, now: now),
                    logger: logger)
                ids.append(id)
            }
            if !ids.isEmpty { try await Self.notify(connection, .newWork, logger: logger) }
            return ids
        }
    }

    func replay(deliveries: [DeliverySummary], now: Int64) async throws(StoreError) -> [String] {
        guard !deliveries.isEmpty else { return [] }
        return try await transaction { [logger] connection in
            var ids: [String] = []
            for delivery in deliveries {
                // Skipped when a replay superseded it meanwhile (here or on another instance). The delivery is locked
                // first, so that two instances replaying it at once cannot both find it current.
                _ = try await connection.rows("SELECT id FROM deliveries WHERE id = \(delivery.id) FOR UPDATE", logger: logger)
                guard try await connection.rows(StoreQueries.supersedes(delivery.id), logger: logger).isEmpty else { continue }
                let id = EventID.make()
                try await connection.execute(
                    StoreQueries.insertDelivery(
                        id: id, eventID: delivery.eventID, destination: delivery.destination, replayOf: delivery.id, now: now),
                    logger: logger)
                ids.append(id)
            }
            if !ids.isEmpty { try await Self.notify(connection, .newWork, logger: logger) }
            return ids
        }
    }

    func suspendedDestinations() async throws(StoreError) -> Set<String> {
        try await run { client, logger in
            var names = Set<String>()
            for row in try await client.rows(StoreQueries.suspendedDestinations, logger: logger) {
                names.insert(try row.text("destination"))
            }
            return names
        }
    }
}

// MARK: The dialect

extension PostgresRandomAccessRow: StoreRow {
    func optionalText(_ column: String) throws(StoreError) -> String? {
        guard contains(column) else { throw StoreError.malformedRow(column, "is missing") }
        do { return try self[column].decode(String?.self) } catch { throw StoreError.malformedRow(column, "is not text") }
    }

    func optionalInteger(_ column: String) throws(StoreError) -> Int64? {
        guard contains(column) else { throw StoreError.malformedRow(column, "is missing") }
        do { return try self[column].decode(Int64?.self) } catch { throw StoreError.malformedRow(column, "is not an integer") }
    }

    func optionalBytes(_ column: String) throws(StoreError) -> [UInt8]? {
        guard contains(column) else { throw StoreError.malformedRow(column, "is missing") }
        do { return try self[column].decode(ByteBuffer?.self).map { Array(buffer: $0) } } catch {
            throw StoreError.malformedRow(column, "is not bytes")
        }
    }
}

extension StoreSQL {
    /// PostgreSQL's form: `$n` for each value, a list as one array parameter.
    var postgres: PostgresQuery {
        var binds = PostgresBindings()
        let sql = render { value, index in
            switch value {
            case .text(let text):
                binds.append(text)
                return "$\(index)"
            case .integer(let integer):
                binds.append(integer)
                return "$\(index)"
            case .textList(let texts):
                binds.append(texts)
                return "(SELECT unnest($\(index)::text[]))"
            }
        }
        return PostgresQuery(unsafeSQL: sql, binds: binds)
    }
}

extension PostgresClient {
    /// Runs a shared query on a pooled connection.
    func rows(_ query: StoreSQL, logger: Logger) async throws -> [PostgresRandomAccessRow] {
        var rows: [PostgresRandomAccessRow] = []
        for try await row in try await self.query(query.postgres, logger: logger) { rows.append(row.makeRandomAccess()) }
        return rows
    }
}

extension PostgresConnection {
    /// Runs a shared query in this connection's transaction.
    func rows(_ query: StoreSQL, logger: Logger) async throws -> [PostgresRandomAccessRow] {
        var rows: [PostgresRandomAccessRow] = []
        for try await row in try await self.query(query.postgres, logger: logger) { rows.append(row.makeRandomAccess()) }
        return rows
    }

    func execute(_ query: StoreSQL, logger: Logger) async throws {
        try await self.query(query.postgres, logger: logger)
    }
}
