import GRDB

/// Listings and replay by filter on SQLite. Pages are ordered by id: ids are UUIDv7, so id order is creation order.
extension SQLiteStore {
    private static let current = RecordFilter.currentDelivery

    /// SQL conditions (joined with AND) and their arguments for `filter`, on events `e` and deliveries `d`.
    private static func conditions(_ filter: RecordFilter, deliveries: Bool) -> (sql: [String], arguments: StatementArguments) {
        var sql: [String] = []
        var arguments = StatementArguments()
        if let source = filter.source {
            sql.append("e.source = ?")
            arguments += [source]
        }
        if let since = filter.since {
            sql.append("e.received_at >= ?")
            arguments += [since]
        }
        if let until = filter.until {
            sql.append("e.received_at < ?")
            arguments += [until]
        }
        var delivery: [String] = [current]
        var deliveryArguments = StatementArguments()
        if let destination = filter.destination {
            delivery.append("d.destination = ?")
            deliveryArguments += [destination]
        }
        if let status = filter.status {
            delivery.append("d.status = ?")
            deliveryArguments += [status.rawValue]
        }
        if deliveries {
            sql += delivery
            arguments += deliveryArguments
        } else if filter.destination != nil || filter.status != nil {
            sql.append("EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND \(delivery.joined(separator: " AND ")))")
            arguments += deliveryArguments
        }
        return (sql, arguments)
    }

    private static func deliverySummary(_ row: Row) -> DeliverySummary {
        DeliverySummary(
            id: row["id"], eventID: row["event_id"], source: row["source"], destination: row["destination"],
            status: DeliveryStatus(rawValue: row["status"]) ?? .pending, attempts: row["attempts"], nextAttemptAt: row["next_attempt_at"],
            lastError: row["last_error"], replayOf: row["replay_of"], createdAt: row["created_at"], updatedAt: row["updated_at"])
    }

    func listEvents(_ filter: RecordFilter, cursor: String?, limit: Int) async throws(StoreError) -> Page<EventSummary> {
        try await read { db in
            var (conditions, arguments) = Self.conditions(filter, deliveries: false)
            if let cursor {
                conditions.append("e.id < ?")
                arguments += [cursor]
            }
            arguments += [limit + 1]
            let events = try Row.fetchAll(
                db,
                sql: """
                    SELECT e.id, e.source, e.received_at FROM events e
                    \(conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND "))
                    ORDER BY e.id DESC LIMIT ?
                    """,
                arguments: arguments)
            var byEvent: [String: [DeliverySummary]] = [:]
            let ids = events.map { $0["id"] as String }
            if !ids.isEmpty {
                for row in try Row.fetchAll(
                    db,
                    sql: """
                        SELECT d.*, e.source FROM deliveries d JOIN events e ON e.id = d.event_id
                        WHERE d.event_id IN (\(databaseQuestionMarks(count: ids.count))) AND \(Self.current) ORDER BY d.destination, d.id
                        """,
                    arguments: StatementArguments(ids))
                {
                    byEvent[row["event_id"], default: []].append(Self.deliverySummary(row))
                }
            }
            let summaries = events.map { row in
                EventSummary(id: row["id"], source: row["source"], receivedAt: row["received_at"], deliveries: byEvent[row["id"]] ?? [])
            }
            return Page(fetched: summaries, limit: limit, id: \.id)
        }
    }

    func listDeliveries(_ filter: RecordFilter, cursor: String?, limit: Int) async throws(StoreError) -> Page<DeliverySummary> {
        try await read { db in
            try Self.deliveryPage(db, filter, extra: [], after: cursor.map { ("<", $0) }, newestFirst: true, limit: limit)
        }
    }

    func replayCandidates(_ filter: RecordFilter, createdBefore: Int64, cursor: String?, limit: Int) async throws(StoreError) -> Page<
        DeliverySummary
    > {
        try await read { db in
            let finished = DeliveryStatus.finished.map(\.rawValue).sorted()
            let extra: [(String, StatementArguments)] = [
                ("d.status IN (\(databaseQuestionMarks(count: finished.count)))", StatementArguments(finished)),
                ("d.created_at < ?", [createdBefore]),
            ]
            return try Self.deliveryPage(db, filter, extra: extra, after: cursor.map { (">", $0) }, newestFirst: false, limit: limit)
        }
    }

    /// A page of current deliveries matching `filter` and the `extra` conditions, ordered by id, continuing past the
    /// cursor (`<` newest first, `>` oldest first).
    private static func deliveryPage(
        _ db: Database, _ filter: RecordFilter, extra: [(String, StatementArguments)], after cursor: (String, String)?,
        newestFirst: Bool, limit: Int
    ) throws -> Page<DeliverySummary> {
        var (conditions, arguments) = conditions(filter, deliveries: true)
        for (condition, values) in extra {
            conditions.append(condition)
            arguments += values
        }
        if let (comparison, id) = cursor {
            conditions.append("d.id \(comparison) ?")
            arguments += [id]
        }
        arguments += [limit + 1]
        let rows = try Row.fetchAll(
            db,
            sql: """
                SELECT d.*, e.source FROM deliveries d JOIN events e ON e.id = d.event_id
                WHERE \(conditions.joined(separator: " AND ")) ORDER BY d.id \(newestFirst ? "DESC" : "") LIMIT ?
                """,
            arguments: arguments)
        return Page(fetched: rows.map(deliverySummary), limit: limit, id: \.id)
    }

    func replay(deliveries: [DeliverySummary], now: Int64) async throws(StoreError) -> [String] {
        guard !deliveries.isEmpty else { return [] }
        return try await write { db in
            var ids: [String] = []
            for delivery in deliveries {
                let superseded = try Bool.fetchOne(db, sql: "SELECT 1 FROM deliveries WHERE replay_of = ?", arguments: [delivery.id]) != nil
                if superseded { continue }
                let id = EventID.make()
                try db.execute(
                    sql: """
                        INSERT INTO deliveries (id, event_id, destination, status, attempts, next_attempt_at, replay_of, created_at, updated_at)
                        VALUES (?, ?, ?, 'pending', 0, ?, ?, ?, ?)
                        """,
                    arguments: [id, delivery.eventID, delivery.destination, now, delivery.id, now, now])
                ids.append(id)
            }
            return ids
        }
    }
}
