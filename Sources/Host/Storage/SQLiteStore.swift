import Foundation
import GRDB
import ServiceLifecycle

/// The embedded default store: one SQLite file in WAL mode with `synchronous=FULL`, so a commit is on disk before it
/// returns. Writes are serialised on one connection; callers batch them (group commit) so that one fsync covers many
/// requests.
///
/// One process owns an SQLite store at a time; several instances share a PostgreSQL store instead.
final class SQLiteStore: EventStore {
    /// The connections (one writer, concurrent readers).
    let pool: DatabasePool
    /// The database file.
    let path: String

    /// Opens (creating when needed) the database at `path` and applies migrations. With `maximumSize` (bytes) the file
    /// never grows past it: commits that would need more space fail as if the disk were full.
    init(path: String, maximumSize: Int? = nil, busyTimeout: Duration = .seconds(5)) throws {
        self.path = path
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            var configuration = Configuration()
            configuration.busyMode = .timeout(TimeInterval(busyTimeout.components.seconds))
            configuration.label = "hookproxy"
            configuration.prepareDatabase { db in
                // WAL is set by DatabasePool; FULL makes each commit fsync the WAL before returning.
                try db.execute(sql: "PRAGMA synchronous = FULL")
                if let maximumSize {
                    let pageSize = try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 4096
                    try db.execute(sql: "PRAGMA max_page_count = \(max(1, maximumSize / pageSize))")
                }
            }
            pool = try DatabasePool(path: path, configuration: configuration)
            try Self.migrator.migrate(pool)
        } catch {
            throw StoreError.unavailable("cannot open SQLite database \(path): \(error)")
        }
    }

    // MARK: Schema

    /// Replaces, in every stored event's headers, the values of the headers ``HeaderRedaction`` redacts by default
    /// (events stored before redaction existed kept them).
    static let scrubCredentialsSQL = """
        UPDATE events SET headers = (
            SELECT json_group_object(key, CASE WHEN \(HeaderRedaction.sqlCondition("key")) THEN '\(HeaderRedaction.placeholder)' ELSE value END)
            FROM json_each(events.headers))
        WHERE json_valid(headers) AND EXISTS (
            SELECT 1 FROM json_each(events.headers) WHERE \(HeaderRedaction.sqlCondition("key")) AND value <> '\(HeaderRedaction.placeholder)')
        """

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: events, deliveries, attempts") { db in
            try db.execute(
                sql: """
                    CREATE TABLE events (
                        id TEXT PRIMARY KEY NOT NULL,
                        source TEXT NOT NULL,
                        received_at INTEGER NOT NULL,
                        content_type TEXT NOT NULL,
                        headers TEXT NOT NULL,
                        body BLOB NOT NULL,
                        fields TEXT NOT NULL,
                        idempotency_key TEXT
                    );
                    CREATE UNIQUE INDEX events_idempotency ON events(source, idempotency_key) WHERE idempotency_key IS NOT NULL;
                    CREATE INDEX events_source_received ON events(source, received_at);
                    CREATE INDEX events_received ON events(received_at);

                    CREATE TABLE deliveries (
                        id TEXT PRIMARY KEY NOT NULL,
                        event_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
                        destination TEXT NOT NULL,
                        status TEXT NOT NULL,
                        attempts INTEGER NOT NULL DEFAULT 0,
                        next_attempt_at INTEGER,
                        lease_until INTEGER,
                        last_error TEXT,
                        replay_of TEXT,
                        created_at INTEGER NOT NULL,
                        updated_at INTEGER NOT NULL
                    );
                    CREATE INDEX deliveries_event ON deliveries(event_id);
                    CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE status IN ('pending', 'retrying');
                    CREATE INDEX deliveries_lease ON deliveries(lease_until) WHERE status = 'in_flight';
                    CREATE INDEX deliveries_destination_status ON deliveries(destination, status);

                    CREATE TABLE attempts (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        delivery_id TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
                        number INTEGER NOT NULL,
                        started_at INTEGER NOT NULL,
                        duration_ms INTEGER NOT NULL,
                        http_status INTEGER,
                        response_body BLOB NOT NULL,
                        error TEXT
                    );
                    CREATE INDEX attempts_delivery ON attempts(delivery_id);
                    """)
        }
        migrator.registerMigration("v2: per-destination due and FIFO indexes") { db in
            try db.execute(
                sql: """
                    DROP INDEX deliveries_due;
                    CREATE INDEX deliveries_waiting ON deliveries(destination, next_attempt_at) WHERE status IN ('pending', 'retrying');
                    CREATE INDEX deliveries_open ON deliveries(destination) WHERE status IN ('pending', 'retrying', 'in_flight');
                    """)
        }
        migrator.registerMigration("v3: replay chains") { db in
            try db.execute(sql: "CREATE INDEX deliveries_replay_of ON deliveries(replay_of) WHERE replay_of IS NOT NULL")
        }
        migrator.registerMigration("v4: requests of a multi-request delivery already sent") { db in
            try db.execute(sql: "ALTER TABLE deliveries ADD COLUMN parts_sent INTEGER NOT NULL DEFAULT 0")
        }
        migrator.registerMigration("v5: destinations suspended by an operator") { db in
            try db.execute(
                sql: "CREATE TABLE suspended_destinations (destination TEXT PRIMARY KEY NOT NULL, suspended_at INTEGER NOT NULL)")
        }
        migrator.registerMigration("v6: abnormal exits and plugin failures counted per delivery") { db in
            try db.execute(sql: "ALTER TABLE deliveries ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0")
            try db.execute(sql: "ALTER TABLE deliveries ADD COLUMN plugin_failures INTEGER NOT NULL DEFAULT 0")
        }
        migrator.registerMigration("v7: credentials scrubbed from stored headers") { db in
            try db.execute(sql: Self.scrubCredentialsSQL)
        }
        return migrator
    }

    // MARK: Writes

    func insert(_ events: [NewEvent]) async throws(StoreError) -> [InsertResult] {
        try await write { db in
            // Cached statements: SQLite parses each SQL text once per connection, not once per row.
            let findDuplicate = try db.cachedStatement(sql: "SELECT id FROM events WHERE source = ? AND idempotency_key = ?")
            let insertEvent = try db.cachedStatement(
                sql: """
                    INSERT INTO events (id, source, received_at, content_type, headers, body, fields, idempotency_key)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """)
            let insertDelivery = try db.cachedStatement(
                sql: """
                    INSERT INTO deliveries (id, event_id, destination, status, attempts, next_attempt_at, created_at, updated_at)
                    VALUES (?, ?, ?, 'pending', 0, ?, ?, ?)
                    """)
            var results: [InsertResult] = []
            results.reserveCapacity(events.count)
            for new in events {
                let event = new.event
                if let key = new.idempotencyKey, let original = try String.fetchOne(findDuplicate, arguments: [event.source, key]) {
                    results.append(.duplicate(originalID: original))
                    continue
                }
                try insertEvent.execute(arguments: [
                    event.id, event.source, event.receivedAt, event.contentType, event.headersJSON, Data(event.body),
                    event.fieldsJSON, new.idempotencyKey,
                ])
                for delivery in new.deliveries {
                    try insertDelivery.execute(arguments: [
                        delivery.id, event.id, delivery.destination, event.receivedAt, event.receivedAt, event.receivedAt,
                    ])
                }
                results.append(.stored)
            }
            return results
        }
    }

    /// The FIFO line's head: the oldest unfinished delivery to `destination`, by insertion order (`rowid`).
    private static let fifoHeadSQL = """
        SELECT id, status, next_attempt_at FROM deliveries INDEXED BY deliveries_open
        WHERE destination = ? AND status IN ('pending', 'retrying', 'in_flight') ORDER BY rowid LIMIT 1
        """

    func nextDue(destination: String, fifo: Bool) async throws(StoreError) -> Int64? {
        try await read { db in
            if fifo {
                guard let head = try Row.fetchOne(db.cachedStatement(sql: Self.fifoHeadSQL), arguments: [destination]) else { return nil }
                return try head.status("status") == .inFlight ? nil : try head.optionalInteger("next_attempt_at")
            }
            let earliest = try Row.fetchOne(
                db.cachedStatement(
                    sql: """
                        SELECT MIN(next_attempt_at) AS due FROM deliveries INDEXED BY deliveries_waiting
                        WHERE destination = ? AND status IN ('pending', 'retrying')
                        """),
                arguments: [destination])
            return try earliest?.optionalInteger("due")
        }
    }

    /// A claim is committed without an fsync (`synchronous=NORMAL` for its transaction): losing it in a crash loses
    /// nothing, since one process owns the store and releases every claim when it starts. The next durable commit syncs
    /// the WAL up to and including it.
    func claimDue(destination: String, fifo: Bool, now: Int64, limit: Int, leaseUntil: Int64) async throws(StoreError) -> [ClaimedDelivery]
    {
        try await writeWithoutSync { db in
            let ids: [String]
            if fifo {
                guard let head = try Row.fetchOne(db.cachedStatement(sql: Self.fifoHeadSQL), arguments: [destination]),
                    try head.status("status") != .inFlight, (try head.optionalInteger("next_attempt_at") ?? .max) <= now
                else { return [] }
                ids = [try head.text("id")]
            } else {
                ids = try Row.fetchAll(
                    db.cachedStatement(
                        sql: """
                            SELECT id FROM deliveries INDEXED BY deliveries_waiting
                            WHERE destination = ? AND status IN ('pending', 'retrying') AND next_attempt_at <= ?
                            ORDER BY next_attempt_at, rowid LIMIT ?
                            """),
                    arguments: [destination, now, limit]
                ).map { row throws(StoreError) in try row.text("id") }
            }
            guard !ids.isEmpty else { return [] }
            // Cached per number of ids (at most a lane's concurrency).
            let claims = try db.map(
                db.cachedStatement(
                    sql: """
                        UPDATE deliveries SET status = 'in_flight', lease_until = ?, updated_at = ?
                        WHERE id IN (\(databaseQuestionMarks(count: ids.count)))
                        RETURNING id, event_id, destination, attempts, parts_sent, plugin_failures, next_attempt_at, rowid AS seq
                        """),
                arguments: [leaseUntil, now] + StatementArguments(ids)
            ) { row throws(StoreError) in try StoreAssembly.Claim(row: row) }
            let events = try db.map(StoreQueries.events(ids: Array(Set(claims.map(\.eventID))))) { row throws(StoreError) in
                try StoredEvent(row: row)
            }
            return StoreAssembly.claimedDeliveries(claims, events: events)
        }
    }

    func record(_ outcomes: [DeliveryOutcome]) async throws(StoreError) {
        guard !outcomes.isEmpty else { return }
        let now = Clock.milliseconds()
        try await write { db in
            let insertAttempt = try db.cachedStatement(
                sql: """
                    INSERT INTO attempts (delivery_id, number, started_at, duration_ms, http_status, response_body, error)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """)
            let updateDelivery = try db.cachedStatement(
                sql: """
                    UPDATE deliveries SET status = ?, attempts = attempts + ?, next_attempt_at = ?, lease_until = NULL,
                        last_error = COALESCE(?, last_error), parts_sent = COALESCE(?, parts_sent),
                        plugin_failures = COALESCE(?, plugin_failures), crashes = CASE WHEN ? THEN 0 ELSE crashes END, updated_at = ?
                    WHERE id = ?
                    """)
            for outcome in outcomes {
                if let attempt = outcome.attempt {
                    try insertAttempt.execute(arguments: [
                        outcome.deliveryID, attempt.number, attempt.startedAt, attempt.durationMilliseconds, attempt.httpStatus,
                        Data(attempt.responseBody), attempt.error,
                    ])
                }
                try updateDelivery.execute(arguments: [
                    outcome.status.rawValue, outcome.attempt != nil && outcome.countsAsAttempt ? 1 : 0, outcome.nextAttemptAt,
                    outcome.error, outcome.partsSent, outcome.pluginFailures, outcome.attempt != nil, now, outcome.deliveryID,
                ])
            }
        }
    }

    func releaseExpiredLeases(now: Int64) async throws(StoreError) -> Int {
        try await write { db in
            try db.execute(
                sql: """
                    UPDATE deliveries SET status = 'pending', lease_until = NULL, next_attempt_at = ?, updated_at = ?
                    WHERE status = 'in_flight' AND lease_until < ?
                    """,
                arguments: [now, now, now])
            return db.changesCount
        }
    }

    func release(deliveryIDs: [String]) async throws(StoreError) {
        guard !deliveryIDs.isEmpty else { return }
        try await writeWithoutSync { db in
            try db.execute(
                sql: """
                    UPDATE deliveries SET status = 'pending', lease_until = NULL
                    WHERE status = 'in_flight' AND id IN (\(databaseQuestionMarks(count: deliveryIDs.count)))
                    """,
                arguments: StatementArguments(deliveryIDs))
        }
    }

    func recordCrashes(_ crashes: [CrashRecord]) async throws(StoreError) -> [QuarantinedDelivery] {
        guard !crashes.isEmpty else { return [] }
        let now = Clock.milliseconds()
        return try await write { db in
            var quarantined: [QuarantinedDelivery] = []
            for crash in crashes {
                guard
                    let row = try Row.fetchOne(
                        db,
                        sql: """
                            UPDATE deliveries SET crashes = crashes + 1
                            WHERE id = ? AND status NOT IN ('delivered', 'dead', 'skipped')
                            RETURNING crashes, attempts, event_id, destination
                            """, arguments: [crash.deliveryID]),
                    try row.count("crashes") >= crash.quarantineAt
                else { continue }
                let eventID = try row.text("event_id")
                try db.execute(
                    sql: """
                        UPDATE deliveries SET status = 'dead', lease_until = NULL, next_attempt_at = NULL, last_error = ?, updated_at = ?
                        WHERE id = ?
                        """, arguments: [crash.reason, now, crash.deliveryID])
                try db.execute(
                    sql: """
                        INSERT INTO attempts (delivery_id, number, started_at, duration_ms, http_status, response_body, error)
                        VALUES (?, ?, ?, 0, NULL, ?, ?)
                        """, arguments: [crash.deliveryID, try row.count("attempts").addingSaturated(1), now, Data(), crash.reason])
                let source = try db.rows(StoreQueries.event(id: eventID)).first?.text("source")
                quarantined.append(
                    QuarantinedDelivery(
                        deliveryID: crash.deliveryID, eventID: eventID, source: source ?? "", destination: try row.text("destination"),
                        reason: crash.reason))
            }
            return quarantined
        }
    }

    /// One process owns an SQLite file, so whatever is in flight at start was left by a process that is gone.
    func releaseAbandonedClaims() async throws(StoreError) -> Int {
        let now = Clock.milliseconds()
        return try await write { db in
            try db.execute(
                sql: """
                    UPDATE deliveries SET status = 'pending', lease_until = NULL, next_attempt_at = ?, updated_at = ?
                    WHERE status = 'in_flight'
                    """,
                arguments: [now, now])
            return db.changesCount
        }
    }

    func purge(receivedBefore cutoff: Int64, limit: Int) async throws(StoreError) -> Int {
        try await write { db in
            // Deliveries and attempts go with their event (ON DELETE CASCADE).
            try db.execute(
                sql: """
                    DELETE FROM events WHERE id IN (
                        SELECT id FROM events INDEXED BY events_received WHERE received_at < ? AND NOT EXISTS (
                            SELECT 1 FROM deliveries WHERE event_id = events.id AND status IN ('pending', 'in_flight', 'retrying'))
                        ORDER BY received_at LIMIT ?)
                    """,
                arguments: [cutoff, limit])
            return db.changesCount
        }
    }

    /// One transaction committed without waiting for the disk (`synchronous = NORMAL`), for writes that a power loss
    /// may take back (claims, releases; a process crash loses nothing, the WAL is in the system's cache). The setting is not restored afterwards: every durable write sets `FULL` for itself
    /// (``write(_:)``), so no failure here can leave a later commit believed durable without its fsync.
    func writeWithoutSync<T: Sendable>(_ updates: @escaping @Sendable (Database) throws -> T) async throws(StoreError) -> T {
        try await transaction(synchronous: "NORMAL", updates)
    }

    /// One durable transaction: `synchronous = FULL` is set on the writer connection before it, so its commit is on
    /// disk before this returns.
    func write<T: Sendable>(_ updates: @escaping @Sendable (Database) throws -> T) async throws(StoreError) -> T {
        try await transaction(synchronous: "FULL", updates)
    }

    private func transaction<T: Sendable>(synchronous: String, _ updates: @escaping @Sendable (Database) throws -> T)
        async throws(StoreError) -> T
    {
        do {
            return try await pool.writeWithoutTransaction { db in
                // Two statements in all, prepared once each (one runs before every transaction).
                try db.cachedStatement(sql: "PRAGMA synchronous = \(synchronous)").execute()
                var result: T?
                try db.inTransaction {
                    result = try updates(db)
                    return .commit
                }
                guard let result else { throw StoreError.commitFailed("the transaction returned nothing") }
                return result
            }
        } catch let error as StoreError {
            throw error
        } catch let error as DatabaseError {
            throw StoreError.commitFailed("\(error.resultCode): \(error.message ?? "no message")")
        } catch {
            throw StoreError.commitFailed("\(error)")
        }
    }

    /// A read on one of the pool's reader connections (it never blocks the writer).
    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(StoreError) -> T {
        do {
            return try await pool.read(body)
        } catch let error as StoreError {
            throw error
        } catch let error as DatabaseError {
            throw StoreError.readFailed("\(error.resultCode): \(error.message ?? "no message")")
        } catch {
            throw StoreError.readFailed("\(error)")
        }
    }

    /// Leases last minutes and only a crash leaves one behind: a minute's delay in finding one is enough.
    var maintenanceInterval: Duration { .seconds(60) }

    /// Nothing runs beside an SQLite store: its connections are GRDB's, opened and closed with it.
    var services: [ServiceGroupConfiguration.ServiceConfiguration] { [] }

    /// Other processes (`hookproxy replay`) write to the file without telling: the engine's idle poll finds their work.
    func onChange(_ handler: @escaping @Sendable (StoreChange) -> Void) {}

    func setSuspended(_ suspended: Bool, destination: String) async throws(StoreError) {
        try await write { db in
            if suspended {
                try db.execute(
                    sql: "INSERT OR IGNORE INTO suspended_destinations (destination, suspended_at) VALUES (?, ?)",
                    arguments: [destination, Clock.milliseconds()])
            } else {
                try db.execute(sql: "DELETE FROM suspended_destinations WHERE destination = ?", arguments: [destination])
            }
        }
    }

    func ping() async throws(StoreError) {
        do {
            _ = try await read { db in try Int.fetchOne(db, sql: "SELECT 1") }
        } catch {
            throw StoreError.unavailable(error.reason)
        }
    }

    func close() async throws(StoreError) {
        do {
            try pool.close()
        } catch {
            throw StoreError.unavailable("cannot close SQLite database \(path): \(error)")
        }
    }
}
