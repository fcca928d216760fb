/// What both backends share above their SQL: the queries whose text is the same in both dialects (``StoreSQL``), and
/// the assembly of their rows (``StoreRow``) into the models. A behaviour written here is written once; a backend
/// runs the queries on its connections, in its transactions, and adds only what its dialect needs (claims, locking,
/// announcements).
enum StoreQueries {
    static let eventColumns = "e.id, e.source, e.received_at, e.content_type, e.headers, e.body, e.fields, e.idempotency_key"
    static let deliveryColumns =
        "d.id, d.event_id, e.source, d.destination, d.status, d.attempts, d.next_attempt_at, d.last_error, d.replay_of, d.created_at, d.updated_at"

    /// True for a delivery `d` that no replay has superseded (see ``RecordFilter``).
    static let currentDelivery = "NOT EXISTS (SELECT 1 FROM deliveries n WHERE n.replay_of = d.id)"

    // MARK: One event

    static func event(id: String) -> StoreSQL {
        "SELECT \(unescaped: eventColumns) FROM events e WHERE e.id = \(id)"
    }

    static func events(ids: [String]) -> StoreSQL {
        "SELECT \(unescaped: eventColumns) FROM events e WHERE e.id IN \(list: ids)"
    }

    static func attempts(ofEvent id: String) -> StoreSQL {
        """
        SELECT a.delivery_id, a.number, a.started_at, a.duration_ms, a.http_status, a.response_body, a.error
        FROM attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE d.event_id = \(id) ORDER BY a.id
        """
    }

    static func deliveries(ofEvent id: String) -> StoreSQL {
        """
        SELECT \(unescaped: deliveryColumns) FROM deliveries d JOIN events e ON e.id = d.event_id
        WHERE d.event_id = \(id) ORDER BY d.created_at, d.destination, d.id
        """
    }

    /// Every delivery of the event, newest first per destination: what ``replayTargets(_:fallback:)`` chooses from.
    static func replayableDeliveries(ofEvent id: String) -> StoreSQL {
        "SELECT d.destination, d.id FROM deliveries d WHERE d.event_id = \(id) ORDER BY d.destination, d.created_at DESC, d.id DESC"
    }

    /// A new pending delivery of an event, due at `now` (a replay of `replayOf`, when given).
    static func insertDelivery(id: String, eventID: String, destination: String, replayOf: String?, now: Int64) -> StoreSQL {
        let replay: StoreSQL = replayOf.map { "\($0)" } ?? "NULL"
        return """
            INSERT INTO deliveries (id, event_id, destination, status, attempts, next_attempt_at, replay_of, created_at, updated_at)
            VALUES (\(id), \(eventID), \(destination), 'pending', 0, \(now), \(replay), \(now), \(now))
            """
    }

    /// Whether a replay superseded the delivery: a row when it did.
    static func supersedes(_ deliveryID: String) -> StoreSQL {
        "SELECT 1 AS superseded FROM deliveries WHERE replay_of = \(deliveryID) LIMIT 1"
    }

    static let queueDepths: StoreSQL = """
        SELECT destination, status, COUNT(*) AS count FROM deliveries
        WHERE status IN ('pending', 'in_flight', 'retrying', 'dead') GROUP BY destination, status
        """

    static let suspendedDestinations: StoreSQL = "SELECT destination FROM suspended_destinations"

    // MARK: Listings

    /// Conditions for `filter` on events `e` and (with `deliveries`, of the current delivery `d`; otherwise of the
    /// event having one) deliveries.
    static func conditions(_ filter: RecordFilter, deliveries: Bool) -> [StoreSQL] {
        var conditions: [StoreSQL] = []
        if let source = filter.source { conditions.append("e.source = \(source)") }
        if let since = filter.since { conditions.append("e.received_at >= \(since)") }
        if let until = filter.until { conditions.append("e.received_at < \(until)") }
        var delivery: [StoreSQL] = ["\(unescaped: currentDelivery)"]
        if let destination = filter.destination { delivery.append("d.destination = \(destination)") }
        if let status = filter.status { delivery.append("d.status = \(status.rawValue)") }
        if deliveries {
            conditions += delivery
        } else if delivery.count > 1 {
            conditions.append(
                "EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND \(StoreSQL.joined(delivery, separator: " AND ")))")
        }
        return conditions
    }

    private static func whereClause(_ conditions: [StoreSQL]) -> StoreSQL {
        conditions.isEmpty ? "" : "WHERE \(StoreSQL.joined(conditions, separator: " AND "))"
    }

    /// A page of events (newest first, one more than `limit`: the extra one says whether a next page exists).
    static func eventPage(_ filter: RecordFilter, cursor: String?, limit: Int) -> StoreSQL {
        var conditions = conditions(filter, deliveries: false)
        if let cursor { conditions.append("e.id < \(cursor)") }
        return "SELECT e.id, e.source, e.received_at FROM events e \(whereClause(conditions)) ORDER BY e.id DESC LIMIT \(limit + 1)"
    }

    /// The current deliveries of these events.
    static func currentDeliveries(ofEvents ids: [String]) -> StoreSQL {
        """
        SELECT \(unescaped: deliveryColumns) FROM deliveries d JOIN events e ON e.id = d.event_id
        WHERE d.event_id IN \(list: ids) AND \(unescaped: currentDelivery) ORDER BY d.destination, d.id
        """
    }

    /// A page of current deliveries matching `filter`, newest first.
    static func deliveryPage(_ filter: RecordFilter, cursor: String?, limit: Int) -> StoreSQL {
        var conditions = conditions(filter, deliveries: true)
        if let cursor { conditions.append("d.id < \(cursor)") }
        return deliveryPage(conditions, newestFirst: true, limit: limit)
    }

    /// A page of current, finished deliveries matching `filter` and created before `createdBefore`, oldest first.
    static func replayCandidatePage(_ filter: RecordFilter, createdBefore: Int64, cursor: String?, limit: Int) -> StoreSQL {
        var conditions = conditions(filter, deliveries: true)
        conditions.append("d.status IN \(list: DeliveryStatus.finished.map(\.rawValue).sorted())")
        conditions.append("d.created_at < \(createdBefore)")
        if let cursor { conditions.append("d.id > \(cursor)") }
        return deliveryPage(conditions, newestFirst: false, limit: limit)
    }

    /// Pages are ordered by id: ids are UUIDv7, so id order is creation order.
    private static func deliveryPage(_ conditions: [StoreSQL], newestFirst: Bool, limit: Int) -> StoreSQL {
        """
        SELECT \(unescaped: deliveryColumns) FROM deliveries d JOIN events e ON e.id = d.event_id
        \(whereClause(conditions)) ORDER BY d.id \(unescaped: newestFirst ? "DESC" : "ASC") LIMIT \(limit + 1)
        """
    }
}

// MARK: Rows to models

extension StoredEvent {
    /// From a row of ``StoreQueries/eventColumns``.
    init(row: some StoreRow) throws(StoreError) {
        self.init(
            id: try row.text("id"), source: try row.text("source"), receivedAt: try row.integer("received_at"),
            contentType: try row.text("content_type"), headersJSON: try row.text("headers"), body: try row.bytes("body"),
            fieldsJSON: try row.text("fields"))
    }
}

extension AttemptRecord {
    init(row: some StoreRow) throws(StoreError) {
        self.init(
            number: try row.count("number"), startedAt: try row.integer("started_at"),
            durationMilliseconds: try row.integer("duration_ms"), httpStatus: try row.optionalInt("http_status"),
            responseBody: try row.bytes("response_body"), error: try row.optionalText("error"))
    }
}

extension DeliverySummary {
    /// From a row of ``StoreQueries/deliveryColumns``.
    init(row: some StoreRow) throws(StoreError) {
        self.init(
            id: try row.text("id"), eventID: try row.text("event_id"), source: try row.text("source"),
            destination: try row.text("destination"), status: try row.status("status"), attempts: try row.count("attempts"),
            nextAttemptAt: try row.optionalInteger("next_attempt_at"), lastError: try row.optionalText("last_error"),
            replayOf: try row.optionalText("replay_of"), createdAt: try row.integer("created_at"),
            updatedAt: try row.integer("updated_at"))
    }
}

extension EventDetail {
    /// An event's detail from its row and the rows of ``StoreQueries/deliveries(ofEvent:)`` and
    /// ``StoreQueries/attempts(ofEvent:)``.
    init(event: some StoreRow, deliveries: [some StoreRow], attempts: [some StoreRow]) throws(StoreError) {
        var history: [String: [AttemptRecord]] = [:]
        for row in attempts { history[try row.text("delivery_id"), default: []].append(try AttemptRecord(row: row)) }
        var assembled: [Delivery] = []
        assembled.reserveCapacity(deliveries.count)
        for row in deliveries {
            let summary = try DeliverySummary(row: row)
            assembled.append(
                Delivery(
                    id: summary.id, destination: summary.destination, status: summary.status, attempts: summary.attempts,
                    nextAttemptAt: summary.nextAttemptAt, lastError: summary.lastError, replayOf: summary.replayOf,
                    createdAt: summary.createdAt, history: history[summary.id] ?? []))
        }
        self.init(
            event: try StoredEvent(row: event), idempotencyKey: try event.optionalText("idempotency_key"), deliveries: assembled)
    }
}

extension Page where Item == EventSummary {
    /// A page of events from the rows of ``StoreQueries/eventPage(_:cursor:limit:)`` and their current deliveries.
    init(events: [some StoreRow], deliveries: [some StoreRow], limit: Int) throws(StoreError) {
        var byEvent: [String: [DeliverySummary]] = [:]
        for row in deliveries {
            let summary = try DeliverySummary(row: row)
            byEvent[summary.eventID, default: []].append(summary)
        }
        var summaries: [EventSummary] = []
        summaries.reserveCapacity(events.count)
        for row in events {
            let id = try row.text("id")
            summaries.append(
                EventSummary(
                    id: id, source: try row.text("source"), receivedAt: try row.integer("received_at"), deliveries: byEvent[id] ?? []))
        }
        self.init(fetched: summaries, limit: limit, id: \.id)
    }
}

extension Page where Item == DeliverySummary {
    /// A page of deliveries from the rows of a delivery page query.
    init(deliveries: [some StoreRow], limit: Int) throws(StoreError) {
        var summaries: [DeliverySummary] = []
        summaries.reserveCapacity(deliveries.count)
        for row in deliveries { summaries.append(try DeliverySummary(row: row)) }
        self.init(fetched: summaries, limit: limit, id: \.id)
    }
}

enum StoreAssembly {
    /// Queue depths from the rows of ``StoreQueries/queueDepths``.
    static func queueDepths(_ rows: [some StoreRow]) throws(StoreError) -> [String: [DeliveryStatus: Int]] {
        var depths: [String: [DeliveryStatus: Int]] = [:]
        for row in rows { depths[try row.text("destination"), default: [:]][try row.status("status")] = try row.count("count") }
        return depths
    }

    /// What replaying an event delivers to: the newest delivery per destination (from the rows of
    /// ``StoreQueries/replayableDeliveries(ofEvent:)``), each superseded by the replay; `fallback` when it had none.
    static func replayTargets(_ rows: [some StoreRow], fallback: [String]) throws(StoreError) -> [(destination: String, replayOf: String?)]
    {
        var targets: [(destination: String, replayOf: String?)] = []
        var seen = Set<String>()
        for row in rows {
            let destination = try row.text("destination")
            if seen.insert(destination).inserted { targets.append((destination, try row.text("id"))) }
        }
        return targets.isEmpty ? fallback.map { ($0, nil) } : targets
    }

    /// One claimed delivery as a claim's `RETURNING` gives it, before its event is attached.
    struct Claim {
        var id: String
        var eventID: String
        var destination: String
        var attempts: Int
        var partsSent: Int
        var pluginFailures: Int
        /// Its due time and ingest order: the order claims are started in.
        var due: Int64
        var sequence: Int64

        /// From a row with `id, event_id, destination, attempts, parts_sent, plugin_failures, next_attempt_at, seq`.
        init(row: some StoreRow) throws(StoreError) {
            id = try row.text("id")
            eventID = try row.text("event_id")
            destination = try row.text("destination")
            attempts = try row.count("attempts")
            partsSent = try row.count("parts_sent")
            pluginFailures = try row.count("plugin_failures")
            due = try row.optionalInteger("next_attempt_at") ?? 0
            sequence = try row.integer("seq")
        }
    }

    /// Claimed deliveries with their events, in due-then-ingest order (`RETURNING` keeps no order). A claim whose event
    /// is gone is left out (its lease returns it, and purge never removes an event with unfinished deliveries).
    static func claimedDeliveries(_ claims: [Claim], events: [StoredEvent]) -> [ClaimedDelivery] {
        var byID: [String: StoredEvent] = [:]
        for event in events { byID[event.id] = event }
        return claims.sorted { ($0.due, $0.sequence) < ($1.due, $1.sequence) }.compactMap { claim in
            guard let event = byID[claim.eventID] else { return nil }
            return ClaimedDelivery(
                id: claim.id, destination: claim.destination, attempts: claim.attempts, event: event, partsSent: claim.partsSent,
                pluginFailures: claim.pluginFailures)
        }
    }
}
