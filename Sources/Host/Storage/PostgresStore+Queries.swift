import PostgresNIO

/// Listings and replay by filter on PostgreSQL, with the same meaning and order as on SQLite (SQLiteStore+Queries).
extension PostgresStore {
    /// SQL text with numbered placeholders and the values bound to them, built a condition at a time.
    private struct Conditions {
        var sql: [String] = []
        var binds = PostgresBindings()

        /// Adds `condition`, in which `?` stands for `value`.
        mutating func add(_ condition: String, _ value: some PostgresDynamicTypeEncodable) {
            sql.append(condition.replacingOccurrences(of: "?", with: placeholder(value)))
        }

        /// Binds `value` and returns its placeholder (`$n`).
        mutating func placeholder(_ value: some PostgresDynamicTypeEncodable) -> String {
            binds.append(value)
            return "$\(binds.count)"
        }
    }

    private static let current = RecordFilter.currentDelivery

    /// Conditions for `filter` on events `e` and deliveries `d`.
    private static func conditions(_ filter: RecordFilter, deliveries: Bool) -> Conditions {
        var conditions = Conditions()
        if let source = filter.source { conditions.add("e.source = ?", source) }
        if let since = filter.since { conditions.add("e.received_at >= ?", since) }
        if let until = filter.until { conditions.add("e.received_at < ?", until) }
        var delivery = [current]
        if let destination = filter.destination { delivery.append("d.destination = \(conditions.placeholder(destination))") }
        if let status = filter.status { delivery.append("d.status = \(conditions.placeholder(status.rawValue))") }
        if deliveries {
            conditions.sql += delivery
        } else if delivery.count > 1 {
            conditions.sql.append("EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND \(delivery.joined(separator: " AND ")))")
        }
        return conditions
    }

    private static let deliveryColumns =
        "d.id, d.event_id, e.source, d.destination, d.status, d.attempts, d.next_attempt_at, d.last_error, d.replay_of, d.created_at, d.updated_at"

    private static func deliverySummary(_ row: PostgresRow) throws -> DeliverySummary {
        let (id, eventID, source, destination, status, attempts, next, lastError, replayOf, created, updated) = try row.decode(
            (String, String, String, String, String, Int, Int64?, String?, String?, Int64, Int64).self)
        return DeliverySummary(
            id: id, eventID: eventID, source: source, destination: destination, status: DeliveryStatus(rawValue: status) ?? .pending,
            attempts: attempts, nextAttemptAt: next, lastError: lastError, replayOf: replayOf, createdAt: created, updatedAt: updated)
    }

    func listEvents(_ filter: RecordFilter, cursor: String?, limit: Int) async throws(StoreError) -> Page<EventSummary> {
        try await run { client, logger in
            var conditions = Self.conditions(filter, deliveries: false)
            if let cursor { conditions.add("e.id < ?", cursor) }
            let where_ = conditions.sql.isEmpty ? "" : "WHERE " + conditions.sql.joined(separator: " AND ")
            let limitPlaceholder = conditions.placeholder(limit + 1)
            var events: [(id: String, source: String, receivedAt: Int64)] = []
            let rows = try await client.query(
                PostgresQuery(
                    unsafeSQL: "SELECT e.id, e.source, e.received_at FROM events e \(where_) ORDER BY e.id DESC LIMIT \(limitPlaceholder)",
                    binds: conditions.binds), logger: logger)
            for try await (id, source, received) in rows.decode((String, String, Int64).self) { events.append((id, source, received)) }
            var byEvent: [String: [DeliverySummary]] = [:]
            if !events.isEmpty {
                let ids = events.map(\.id)
                let rows = try await client.query(
                    """
                    SELECT \(unescaped: Self.deliveryColumns) FROM deliveries d JOIN events e ON e.id = d.event_id
                    WHERE d.event_id = ANY(\(ids)::text[]) AND \(unescaped: Self.current) ORDER BY d.destination, d.id
                    """, logger: logger)
                for try await row in rows {
                    let summary = try Self.deliverySummary(row)
                    byEvent[summary.eventID, default: []].append(summary)
                }
            }
            let summaries = events.map {
                EventSummary(id: $0.id, source: $0.source, receivedAt: $0.receivedAt, deliveries: byEvent[$0.id] ?? [])
            }
            return Page(fetched: summaries, limit: limit, id: \.id)
        }
    }

    func listDeliveries(_ filter: RecordFilter, cursor: String?, limit: Int) async throws(StoreError) -> Page<DeliverySummary> {
        var conditions = Self.conditions(filter, deliveries: true)
        if let cursor { conditions.add("d.id < ?", cursor) }
        return try await deliveryPage(conditions, newestFirst: true, limit: limit)
    }

    func replayCandidates(_ filter: RecordFilter, createdBefore: Int64, cursor: String?, limit: Int) async throws(StoreError) -> Page<
        DeliverySummary
    > {
        var conditions = Self.conditions(filter, deliveries: true)
        conditions.add("d.status = ANY(?::text[])", DeliveryStatus.finished.map(\.rawValue).sorted())
        conditions.add("d.created_at < ?", createdBefore)
        if let cursor { conditions.add("d.id > ?", cursor) }
        return try await deliveryPage(conditions, newestFirst: false, limit: limit)
    }

    /// A page of current deliveries matching `conditions`, ordered by id.
    private func deliveryPage(_ conditions: Conditions, newestFirst: Bool, limit: Int) async throws(StoreError) -> Page<DeliverySummary> {
        var conditions = conditions
        let limitPlaceholder = conditions.placeholder(limit + 1)
        let (sql, binds) = (conditions.sql, conditions.binds)
        return try await run { client, logger in
            let rows = try await client.query(
                PostgresQuery(
                    unsafeSQL: """
                        SELECT \(Self.deliveryColumns) FROM deliveries d JOIN events e ON e.id = d.event_id
                        WHERE \(sql.joined(separator: " AND ")) ORDER BY d.id \(newestFirst ? "DESC" : "") LIMIT \(limitPlaceholder)
                        """,
                    binds: binds), logger: logger)
            var items: [DeliverySummary] = []
            for try await row in rows { items.append(try Self.deliverySummary(row)) }
            return Page(fetched: items, limit: limit, id: \.id)
        }
    }
}
