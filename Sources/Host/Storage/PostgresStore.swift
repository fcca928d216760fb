import Foundation
import Logging
import NIOCore
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// The scale-out store: several hookproxy instances share one PostgreSQL database (decisions §28).
///
/// Every instance may ingest, deliver, replay and answer the admin API. Work is claimed with
/// `SELECT … FOR UPDATE SKIP LOCKED`, marked in flight with a lease and the claiming instance's id. Each instance
/// records that it is alive every third of ``instanceTimeout`` (`instances.seen_at`); the claims of an instance not
/// seen for that long go back to pending, as do claims whose lease ran out. `NOTIFY hookproxy_work` at every commit
/// that adds due work (or suspends or resumes a destination) wakes the engines of the other instances, which `LISTEN`
/// on a connection of their own.
///
/// A FIFO destination's head is locked (`FOR UPDATE`, without skipping) while an instance claims it: a head in flight
/// anywhere means nothing is due for that destination on any instance.
final class PostgresStore: EventStore {
    /// The channel changes are announced on; the payload is a ``StoreChange`` raw value. PostgreSQL folds identical
    /// notifications of one transaction into one.
    static let workChannel = "hookproxy_work"
    /// Claims of an instance not seen for this long are released; it records that it is alive every third of it.
    let instanceTimeout: Duration
    /// How often this instance records that it is alive.
    var heartbeat: Duration { instanceTimeout / 3 }
    private var staleAfterMilliseconds: Int64 { instanceTimeout.wholeMilliseconds }

    /// This process's id in `instances` and in `deliveries.claimed_by`.
    let instanceID = EventID.make()
    /// The URL without its password, for messages.
    let displayURL: String

    private let client: PostgresClient
    let logger: Logger
    private let changeHandlers = Mutex<[@Sendable (StoreChange) -> Void]>([])
    /// Told when the first change handler is registered: only then does the instance listen.
    private let listening: (stream: AsyncStream<Void>, continuation: AsyncStream<Void>.Continuation) = AsyncStream.makeStream()
    /// Finished by ``close()``: the instance's service returns, and with it the group that runs the pool.
    private let closing: (stream: AsyncStream<Void>, continuation: AsyncStream<Void>.Continuation) = AsyncStream.makeStream()
    private let closed = Atomic<Bool>(false)
    /// The longest a store call waits for the database before failing as unavailable.
    let operationTimeout: Duration

    /// Connects to `url` (postgres://user:password@host:port/database?sslmode=...&sslrootcert=...), applies the
    /// migrations (one instance at a time, under an advisory lock) and registers this instance.
    init(
        url: String, logger: Logger, instanceTimeout: Duration = .seconds(15), maximumConnections: Int = 20,
        operationTimeout: Duration = .seconds(5)
    ) async throws {
        let parsed = try PostgresURL(url)
        displayURL = parsed.display
        self.logger = logger
        self.instanceTimeout = instanceTimeout
        self.operationTimeout = operationTimeout
        var configuration = PostgresClient.Configuration(
            host: parsed.host, port: parsed.port, username: parsed.username, password: parsed.password, database: parsed.database,
            tls: parsed.tls)
        configuration.options.maximumConnections = maximumConnections
        configuration.options.connectTimeout = .seconds(5)
        client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        // One connection first, outside the pool, applies the migrations and registers this instance: a refused
        // certificate, a wrong password or a closed port fails the start at once with its reason (the pool would retry
        // it for a minute and report a timeout), and the pool itself runs only as a service (``services``).
        do {
            var probe = PostgresConnection.Configuration(
                host: parsed.host, port: parsed.port, username: parsed.username, password: parsed.password, database: parsed.database,
                tls: try parsed.connectionTLS())
            probe.options.connectTimeout = .seconds(5)
            let connection = try await PostgresConnection.connect(configuration: probe, id: 0, logger: logger)
            do {
                try await Self.migrate(connection, logger: logger)
                try await register(on: connection)
            } catch {
                try? await connection.close()
                throw error
            }
            try? await connection.close()
        } catch {
            throw StoreError.unavailable("cannot open PostgreSQL database \(parsed.display): \(Self.describe(error))")
        }
    }

    /// What must run while the store is used, in the order a ``ServiceGroup`` starts them (and stops them in reverse):
    /// the connection pool, then this instance's upkeep (its heartbeat, `LISTEN` for other instances' work, and leaving
    /// the instances table at shutdown, while the pool still runs). ``close()`` ends them too.
    var services: [ServiceGroupConfiguration.ServiceConfiguration] {
        [.init(service: client), .init(service: InstanceUpkeep(store: self), successTerminationBehavior: .cancelGroup)]
    }

    // MARK: Schema

    /// Versioned migrations, applied in order in one transaction each. A new version is appended, never edited.
    static let migrations: [(version: Int, name: String, sql: [String])] = [
        (
            1, "events, deliveries, attempts, instances",
            [
                """
                CREATE TABLE events (
                    id TEXT PRIMARY KEY,
                    source TEXT NOT NULL,
                    received_at BIGINT NOT NULL,
                    content_type TEXT NOT NULL,
                    headers TEXT NOT NULL,
                    body BYTEA NOT NULL,
                    fields TEXT NOT NULL,
                    idempotency_key TEXT
                )
                """,
                "CREATE UNIQUE INDEX events_idempotency ON events(source, idempotency_key) WHERE idempotency_key IS NOT NULL",
                "CREATE INDEX events_source_received ON events(source, received_at)",
                "CREATE INDEX events_received ON events(received_at)",
                """
                CREATE TABLE deliveries (
                    id TEXT PRIMARY KEY,
                    seq BIGSERIAL NOT NULL,
                    event_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
                    destination TEXT NOT NULL,
                    status TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at BIGINT,
                    lease_until BIGINT,
                    claimed_by TEXT,
                    last_error TEXT,
                    replay_of TEXT,
                    parts_sent INTEGER NOT NULL DEFAULT 0,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX deliveries_event ON deliveries(event_id)",
                "CREATE INDEX deliveries_waiting ON deliveries(destination, next_attempt_at, seq) WHERE status IN ('pending', 'retrying')",
                "CREATE INDEX deliveries_open ON deliveries(destination, seq) WHERE status IN ('pending', 'retrying', 'in_flight')",
                "CREATE INDEX deliveries_lease ON deliveries(lease_until) WHERE status = 'in_flight'",
                "CREATE INDEX deliveries_destination_status ON deliveries(destination, status)",
                "CREATE INDEX deliveries_replay_of ON deliveries(replay_of) WHERE replay_of IS NOT NULL",
                """
                CREATE TABLE attempts (
                    id BIGSERIAL PRIMARY KEY,
                    delivery_id TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
                    number INTEGER NOT NULL,
                    started_at BIGINT NOT NULL,
                    duration_ms BIGINT NOT NULL,
                    http_status INTEGER,
                    response_body BYTEA NOT NULL,
                    error TEXT
                )
                """,
                "CREATE INDEX attempts_delivery ON attempts(delivery_id)",
                """
                CREATE TABLE instances (
                    id TEXT PRIMARY KEY,
                    host TEXT NOT NULL,
                    pid INTEGER NOT NULL,
                    started_at BIGINT NOT NULL,
                    seen_at BIGINT NOT NULL
                )
                """,
            ]
        ),
        (
            2, "destinations suspended by an operator",
            ["CREATE TABLE suspended_destinations (destination TEXT PRIMARY KEY, suspended_at BIGINT NOT NULL, suspended_by TEXT NOT NULL)"]
        ),
        (
            3, "abnormal exits and plugin failures counted per delivery",
            [
                "ALTER TABLE deliveries ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0",
                "ALTER TABLE deliveries ADD COLUMN plugin_failures INTEGER NOT NULL DEFAULT 0",
            ]
        ),
        (4, "credentials scrubbed from stored headers", [scrubCredentialsSQL]),
    ]

    /// Replaces, in every stored event's headers, the values of the headers ``HeaderRedaction`` redacts by default
    /// (events stored before redaction existed kept them). `json`, not `jsonb`: the members keep their order.
    static let scrubCredentialsSQL = """
        UPDATE events SET headers = (
            SELECT json_object_agg(key, CASE WHEN \(HeaderRedaction.sqlCondition("key")) THEN to_json('\(HeaderRedaction.placeholder)'::text) ELSE value END)::text
            FROM json_each(events.headers::json))
        WHERE EXISTS (
            SELECT 1 FROM json_each_text(events.headers::json)
            WHERE \(HeaderRedaction.sqlCondition("key")) AND value <> '\(HeaderRedaction.placeholder)')
        """

    /// An arbitrary constant: the advisory lock that serialises migrations between instances starting together.
    private static let migrationLock: Int64 = 0x686F_6F6B_7072_6F78

    private static func migrate(_ connection: PostgresConnection, logger: Logger) async throws {
        try await connection.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(migrationLock))", logger: logger)
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS hookproxy_migrations (
                    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())
                """, logger: logger)
            var applied = Set<Int>()
            for try await version in try await connection.query("SELECT version FROM hookproxy_migrations", logger: logger).decode(
                Int.self)
            {
                applied.insert(version)
            }
            for migration in migrations where !applied.contains(migration.version) {
                for statement in migration.sql { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
                try await connection.query(
                    "INSERT INTO hookproxy_migrations (version, name) VALUES (\(migration.version), \(migration.name))", logger: logger)
                logger.info("applied storage migration", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
            }
        }
    }

    // MARK: Instances

    private func register(on connection: PostgresConnection) async throws {
        let now = Clock.milliseconds()
        let host = ProcessInfo.processInfo.hostName
        let pid = Int(getpid())
        try await connection.query(
            "INSERT INTO instances (id, host, pid, started_at, seen_at) VALUES (\(instanceID), \(host), \(pid), \(now), \(now))",
            logger: logger)
    }

    /// This instance's upkeep, as a service after the pool's: until a graceful shutdown, cancellation or ``close()``,
    /// records that it is alive and listens for other instances' work; then leaves the instances table.
    private struct InstanceUpkeep: Service {
        let store: PostgresStore

        func run() async throws {
            await withDiscardingTaskGroup { group in
                group.addTask { await store.recordHeartbeats() }
                group.addTask { await store.listenForChanges() }
                await withTaskGroup(of: Void.self) { waiting in
                    waiting.addTask { try? await gracefulShutdown() }
                    waiting.addTask { for await _ in store.closing.stream {} }
                    await waiting.next()
                    waiting.cancelAll()
                }
                try? await store.close()
                group.cancelAll()
            }
        }
    }

    private func recordHeartbeats() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: heartbeat)
            guard !Task.isCancelled else { return }
            let now = Clock.milliseconds()
            do {
                try await client.query("UPDATE instances SET seen_at = \(now) WHERE id = \(instanceID)", logger: logger)
                let dayAgo = now - 86_400_000
                try await client.query("DELETE FROM instances WHERE seen_at < \(dayAgo)", logger: logger)
            } catch {
                if Task.isCancelled { return }
                logger.warning("cannot record this instance's heartbeat", metadata: ["error": "\(Self.describe(error))"])
            }
        }
    }

    var maintenanceInterval: Duration { heartbeat }

    // MARK: Wake-ups

    /// Calls `handler` whenever another instance (or this one) commits work that may be due or suspends or resumes a
    /// destination: `LISTEN hookproxy_work` on a dedicated connection, re-established after a failure.
    func onChange(_ handler: @escaping @Sendable (StoreChange) -> Void) {
        let first = changeHandlers.withLock { handlers in
            handlers.append(handler)
            return handlers.count == 1
        }
        if first { listening.continuation.yield() }
    }

    /// Once a handler is registered, holds a connection that `LISTEN`s on ``workChannel``, again after each failure.
    private func listenForChanges() async {
        for await _ in listening.stream { break }
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: Self.workChannel) { notifications in
                        // Whatever was committed while not listening is found by looking again.
                        self.announce(.newWork)
                        self.announce(.destinationStates)
                        for try await notification in notifications {
                            self.announce(StoreChange(rawValue: notification.payload) ?? .newWork)
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("listening for new work failed; retrying", metadata: ["error": "\(Self.describe(error))"])
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    private func announce(_ change: StoreChange) {
        for handler in changeHandlers.withLock({ $0 }) { handler(change) }
    }

    // MARK: Writes

    func insert(_ events: [NewEvent]) async throws(StoreError) -> [InsertResult] {
        guard !events.isEmpty else { return [] }
        return try await transaction { [logger] connection in
            var ids: [String] = []
            var sources: [String] = []
            var received: [Int64] = []
            var contentTypes: [String] = []
            var headers: [String] = []
            var bodies: [ByteBuffer] = []
            var fields: [String] = []
            var keys: [String] = []
            for new in events {
                let event = new.event
                ids.append(event.id)
                sources.append(event.source)
                received.append(event.receivedAt)
                contentTypes.append(event.contentType)
                headers.append(event.headersJSON)
                bodies.append(ByteBuffer(bytes: event.body))
                fields.append(event.fieldsJSON)
                // No key is sent as '' (text[] cannot carry NULL here); NULLIF turns it back.
                keys.append(new.idempotencyKey ?? "")
            }
            // One statement for the batch. A key seen before, or earlier in the batch, inserts nothing.
            var stored = Set<String>()
            let rows = try await connection.query(
                """
                INSERT INTO events (id, source, received_at, content_type, headers, body, fields, idempotency_key)
                SELECT id, source, received_at, content_type, headers, body, fields, NULLIF(idempotency_key, '')
                FROM unnest(\(ids)::text[], \(sources)::text[], \(received)::int8[], \(contentTypes)::text[], \(headers)::text[],
                            \(bodies)::bytea[], \(fields)::text[], \(keys)::text[])
                     WITH ORDINALITY AS e(id, source, received_at, content_type, headers, body, fields, idempotency_key, n)
                ORDER BY n
                ON CONFLICT (source, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                RETURNING id
                """, logger: logger)
            for try await id in rows.decode(String.self) { stored.insert(id) }

            var results: [InsertResult] = []
            var duplicates: [(index: Int, source: String, key: String)] = []
            var deliveryIDs: [String] = []
            var deliveryEvents: [String] = []
            var deliveryDestinations: [String] = []
            var deliveryTimes: [Int64] = []
            for (index, new) in events.enumerated() {
                guard stored.contains(new.event.id) else {
                    duplicates.append((index, new.event.source, new.idempotencyKey ?? ""))
                    results.append(.duplicate(originalID: ""))
                    continue
                }
                results.append(.stored)
                for delivery in new.deliveries {
                    deliveryIDs.append(delivery.id)
                    deliveryEvents.append(new.event.id)
                    deliveryDestinations.append(delivery.destination)
                    deliveryTimes.append(new.event.receivedAt)
                }
            }
            if !duplicates.isEmpty {
                let duplicateSources = duplicates.map(\.source)
                let duplicateKeys = duplicates.map(\.key)
                var originals: [String: String] = [:]
                let rows = try await connection.query(
                    """
                    SELECT e.source, e.idempotency_key, e.id FROM events e
                    JOIN unnest(\(duplicateSources)::text[], \(duplicateKeys)::text[]) AS k(source, idempotency_key)
                      ON e.source = k.source AND e.idempotency_key = k.idempotency_key
                    """, logger: logger)
                for try await (source, key, id) in rows.decode((String, String, String).self) { originals[source + "\u{0}" + key] = id }
                for duplicate in duplicates {
                    results[duplicate.index] = .duplicate(originalID: originals[duplicate.source + "\u{0}" + duplicate.key] ?? "")
                }
            }
            if !deliveryIDs.isEmpty {
                // Ordered as given, so that `seq` (the FIFO order) follows ingest order within the batch. The
                // announcement goes in the same statement: one round trip fewer per batch on the ingest path.
                try await connection.query(
                    """
                    WITH added AS (
                        INSERT INTO deliveries (id, event_id, destination, status, attempts, next_attempt_at, created_at, updated_at)
                        SELECT id, event_id, destination, 'pending', 0, at, at, at
                        FROM unnest(\(deliveryIDs)::text[], \(deliveryEvents)::text[], \(deliveryDestinations)::text[], \(deliveryTimes)::int8[])
                             WITH ORDINALITY AS d(id, event_id, destination, at, n)
                        ORDER BY n
                        RETURNING 1
                    )
                    SELECT pg_notify(\(Self.workChannel), \(StoreChange.newWork.rawValue)) WHERE EXISTS (SELECT 1 FROM added)
                    """, logger: logger)
            }
            return results
        }
    }

    /// Announces `change`, delivered to listeners when the transaction commits. The ingest and outcome paths announce
    /// in their own statement instead.
    static func notify(_ connection: PostgresConnection, _ change: StoreChange, logger: Logger) async throws {
        try await connection.query("SELECT pg_notify(\(workChannel), \(change.rawValue))", logger: logger)
    }

    func nextDue(destination: String, fifo: Bool) async throws(StoreError) -> Int64? {
        try await run { client, logger in
            if fifo {
                let rows = try await client.query(
                    """
                    SELECT status, next_attempt_at FROM deliveries
                    WHERE destination = \(destination) AND status IN ('pending', 'retrying', 'in_flight') ORDER BY seq LIMIT 1
                    """, logger: logger)
                for try await (status, next) in rows.decode((String, Int64?).self) {
                    return status == DeliveryStatus.inFlight.rawValue ? nil : next
                }
                return nil
            }
            let rows = try await client.query(
                """
                SELECT MIN(next_attempt_at) FROM deliveries
                WHERE destination = \(destination) AND status IN ('pending', 'retrying')
                """, logger: logger)
            for try await next in rows.decode(Int64?.self) { return next }
            return nil
        }
    }

    func claimDue(destination: String, fifo: Bool, now: Int64, limit: Int, leaseUntil: Int64) async throws(StoreError) -> [ClaimedDelivery]
    {
        try await transaction { [instanceID, logger] connection in
            let claimed: PostgresRowSequence
            if fifo {
                // The head, locked without skipping: an instance claiming it at the same moment waits, then sees it in
                // flight. Only a head that is due and not in flight is claimed.
                claimed = try await connection.query(
                    """
                    WITH head AS (
                        SELECT id, status, next_attempt_at FROM deliveries
                        WHERE destination = \(destination) AND status IN ('pending', 'retrying', 'in_flight')
                        ORDER BY seq LIMIT 1 FOR UPDATE
                    )
                    UPDATE deliveries d SET status = 'in_flight', lease_until = \(leaseUntil), claimed_by = \(instanceID), updated_at = \(now)
                    FROM head WHERE d.id = head.id AND head.status <> 'in_flight' AND head.next_attempt_at <= \(now)
                    RETURNING d.id, d.event_id, d.destination, d.attempts, d.parts_sent, d.next_attempt_at, d.seq, d.plugin_failures
                    """, logger: logger)
            } else {
                claimed = try await connection.query(
                    """
                    WITH due AS (
                        SELECT id FROM deliveries
                        WHERE destination = \(destination) AND status IN ('pending', 'retrying') AND next_attempt_at <= \(now)
                        ORDER BY next_attempt_at, seq LIMIT \(limit) FOR UPDATE SKIP LOCKED
                    )
                    UPDATE deliveries d SET status = 'in_flight', lease_until = \(leaseUntil), claimed_by = \(instanceID), updated_at = \(now)
                    FROM due WHERE d.id = due.id
                    RETURNING d.id, d.event_id, d.destination, d.attempts, d.parts_sent, d.next_attempt_at, d.seq, d.plugin_failures
                    """, logger: logger)
            }
            var claims: [StoreAssembly.Claim] = []
            for try await row in claimed { claims.append(try StoreAssembly.Claim(row: row.makeRandomAccess())) }
            guard !claims.isEmpty else { return [] }
            let rows = try await connection.rows(StoreQueries.events(ids: Array(Set(claims.map(\.eventID)))), logger: logger)
            let events = try rows.map { row throws(StoreError) in try StoredEvent(row: row) }
            return StoreAssembly.claimedDeliveries(claims, events: events)
        }
    }

    func record(_ outcomes: [DeliveryOutcome]) async throws(StoreError) {
        guard !outcomes.isEmpty else { return }
        let now = Clock.milliseconds()
        try await transaction { [logger] connection in
            var attemptDeliveries: [String] = []
            var numbers: [Int] = []
            var starts: [Int64] = []
            var durations: [Int64] = []
            var statuses: [Int] = []
            var bodies: [ByteBuffer] = []
            var errors: [String] = []
            var hasErrors: [Bool] = []
            var ids: [String] = []
            var newStatuses: [String] = []
            var counted: [Int] = []
            var nextAttempts: [Int64] = []
            var lastErrors: [String] = []
            var hasLastErrors: [Bool] = []
            var parts: [Int] = []
            var failures: [Int] = []
            var attempted: [Bool] = []
            for outcome in outcomes {
                if let attempt = outcome.attempt {
                    attemptDeliveries.append(outcome.deliveryID)
                    numbers.append(attempt.number)
                    starts.append(attempt.startedAt)
                    durations.append(attempt.durationMilliseconds)
                    // -1 and a false flag stand for NULL: the arrays bound here carry no NULLs.
                    statuses.append(attempt.httpStatus ?? -1)
                    bodies.append(ByteBuffer(bytes: attempt.responseBody))
                    errors.append(attempt.error ?? "")
                    hasErrors.append(attempt.error != nil)
                }
                ids.append(outcome.deliveryID)
                newStatuses.append(outcome.status.rawValue)
                counted.append(outcome.attempt != nil && outcome.countsAsAttempt ? 1 : 0)
                nextAttempts.append(outcome.nextAttemptAt ?? -1)
                lastErrors.append(outcome.error ?? "")
                hasLastErrors.append(outcome.error != nil)
                parts.append(outcome.partsSent ?? -1)
                failures.append(outcome.pluginFailures ?? -1)
                attempted.append(outcome.attempt != nil)
            }
            if !attemptDeliveries.isEmpty {
                try await connection.query(
                    """
                    INSERT INTO attempts (delivery_id, number, started_at, duration_ms, http_status, response_body, error)
                    SELECT delivery_id, number, started_at, duration_ms, NULLIF(http_status, -1), response_body,
                           CASE WHEN has_error THEN error END
                    FROM unnest(\(attemptDeliveries)::text[], \(numbers)::int8[], \(starts)::int8[], \(durations)::int8[],
                                \(statuses)::int8[], \(bodies)::bytea[], \(errors)::text[], \(hasErrors)::bool[])
                         WITH ORDINALITY AS a(delivery_id, number, started_at, duration_ms, http_status, response_body, error, has_error, n)
                    ORDER BY n
                    """, logger: logger)
            }
            // Work that waits again (a retry, a release) may be taken by any instance when it is due: announced in the
            // same statement.
            try await connection.query(
                """
                WITH updated AS (
                UPDATE deliveries d SET status = u.status, attempts = d.attempts + u.counted,
                    next_attempt_at = NULLIF(u.next_attempt_at, -1), lease_until = NULL, claimed_by = NULL,
                    last_error = CASE WHEN u.has_last_error THEN u.last_error ELSE d.last_error END,
                    parts_sent = CASE WHEN u.parts_sent = -1 THEN d.parts_sent ELSE u.parts_sent END,
                    plugin_failures = CASE WHEN u.plugin_failures = -1 THEN d.plugin_failures ELSE u.plugin_failures END,
                    crashes = CASE WHEN u.attempted THEN 0 ELSE d.crashes END, updated_at = \(now)
                FROM unnest(\(ids)::text[], \(newStatuses)::text[], \(counted)::int8[], \(nextAttempts)::int8[],
                            \(lastErrors)::text[], \(hasLastErrors)::bool[], \(parts)::int8[], \(failures)::int8[], \(attempted)::bool[])
                     AS u(id, status, counted, next_attempt_at, last_error, has_last_error, parts_sent, plugin_failures, attempted)
                WHERE d.id = u.id
                RETURNING u.status
                )
                SELECT pg_notify(\(Self.workChannel), \(StoreChange.newWork.rawValue))
                WHERE EXISTS (SELECT 1 FROM updated WHERE status IN ('pending', 'retrying'))
                """, logger: logger)
        }
    }

    func releaseExpiredLeases(now: Int64) async throws(StoreError) -> Int {
        try await transaction { [logger, staleAfterMilliseconds] connection in
            let stale = now - staleAfterMilliseconds
            let rows = try await connection.query(
                """
                UPDATE deliveries SET status = 'pending', lease_until = NULL, claimed_by = NULL, next_attempt_at = \(now), updated_at = \(now)
                WHERE status = 'in_flight' AND (lease_until < \(now)
                    OR claimed_by IS NULL OR claimed_by NOT IN (SELECT id FROM instances WHERE seen_at >= \(stale)))
                RETURNING 1
                """, logger: logger)
            var count = 0
            for try await _ in rows { count += 1 }
            if count > 0 { try await Self.notify(connection, .newWork, logger: logger) }
            return count
        }
    }

    func release(deliveryIDs: [String]) async throws(StoreError) {
        guard !deliveryIDs.isEmpty else { return }
        try await transaction { [logger, instanceID] connection in
            let rows = try await connection.query(
                """
                UPDATE deliveries SET status = 'pending', lease_until = NULL, claimed_by = NULL
                WHERE status = 'in_flight' AND claimed_by = \(instanceID) AND id = ANY(\(deliveryIDs)::text[])
                RETURNING 1
                """, logger: logger)
            var released = 0
            for try await _ in rows { released += 1 }
            if released > 0 { try await Self.notify(connection, .newWork, logger: logger) }
        }
    }

    func recordCrashes(_ crashes: [CrashRecord]) async throws(StoreError) -> [QuarantinedDelivery] {
        guard !crashes.isEmpty else { return [] }
        let now = Clock.milliseconds()
        return try await transaction { [logger] connection in
            var quarantined: [QuarantinedDelivery] = []
            for crash in crashes {
                var counted: (crashes: Int, attempts: Int, eventID: String, destination: String)?
                for try await row in try await connection.query(
                    """
                    UPDATE deliveries SET crashes = crashes + 1
                    WHERE id = \(crash.deliveryID) AND status NOT IN ('delivered', 'dead', 'skipped')
                    RETURNING crashes, attempts, event_id, destination
                    """, logger: logger)
                {
                    counted = try row.decode((Int, Int, String, String).self)
                }
                guard let counted, counted.crashes >= crash.quarantineAt else { continue }
                try await connection.query(
                    """
                    UPDATE deliveries SET status = 'dead', lease_until = NULL, claimed_by = NULL, next_attempt_at = NULL,
                        last_error = \(crash.reason), updated_at = \(now)
                    WHERE id = \(crash.deliveryID)
                    """, logger: logger)
                try await connection.query(
                    """
                    INSERT INTO attempts (delivery_id, number, started_at, duration_ms, http_status, response_body, error)
                    VALUES (\(crash.deliveryID), \(counted.attempts + 1), \(now), 0, NULL, ''::bytea, \(crash.reason))
                    """, logger: logger)
                var source = ""
                for try await name in try await connection.query("SELECT source FROM events WHERE id = \(counted.eventID)", logger: logger)
                    .decode(String.self)
                {
                    source = name
                }
                quarantined.append(
                    QuarantinedDelivery(
                        deliveryID: crash.deliveryID, eventID: counted.eventID, source: source, destination: counted.destination,
                        reason: crash.reason))
            }
            return quarantined
        }
    }

    /// Several instances share the store: only claims of instances that stopped being seen (or whose lease ran out)
    /// are abandoned; the others are still being worked on.
    func releaseAbandonedClaims() async throws(StoreError) -> Int {
        try await releaseExpiredLeases(now: Clock.milliseconds())
    }

    func purge(receivedBefore cutoff: Int64, limit: Int) async throws(StoreError) -> Int {
        try await transaction { [logger] connection in
            // Deliveries and attempts go with their event (ON DELETE CASCADE).
            let rows = try await connection.query(
                """
                DELETE FROM events WHERE id IN (
                    SELECT id FROM events e WHERE received_at < \(cutoff) AND NOT EXISTS (
                        SELECT 1 FROM deliveries WHERE event_id = e.id AND status IN ('pending', 'in_flight', 'retrying'))
                    ORDER BY received_at LIMIT \(limit) FOR UPDATE SKIP LOCKED)
                RETURNING id
                """, logger: logger)
            var count = 0
            for try await _ in rows { count += 1 }
            return count
        }
    }

    // MARK: Destination state

    func setSuspended(_ suspended: Bool, destination: String) async throws(StoreError) {
        try await transaction { [logger, instanceID] connection in
            if suspended {
                try await connection.query(
                    """
                    INSERT INTO suspended_destinations (destination, suspended_at, suspended_by)
                    VALUES (\(destination), \(Clock.milliseconds()), \(instanceID)) ON CONFLICT (destination) DO NOTHING
                    """, logger: logger)
            } else {
                try await connection.query("DELETE FROM suspended_destinations WHERE destination = \(destination)", logger: logger)
            }
            try await Self.notify(connection, .destinationStates, logger: logger)
        }
    }

    func ping() async throws(StoreError) {
        _ = try await run { client, logger in
            try await client.query("SELECT 1", logger: logger)
        }
    }

    /// Leaves the instances table and ends the store's services; further calls fail. Its claims were released or
    /// recorded by the engine's shutdown; if leaving fails, other instances find this one's heartbeat stale within
    /// `instance_timeout` instead.
    func close() async throws(StoreError) {
        guard !closed.exchange(true, ordering: .sequentiallyConsistent) else { return }
        do {
            _ = try await withTimeout { [instanceID] client, logger, _ in
                try await client.query("DELETE FROM instances WHERE id = \(instanceID)", logger: logger)
            }
        } catch {
            logger.warning(
                "cannot remove this instance from the instances table; others will see it stop when its heartbeat is stale",
                metadata: ["error": "\(error)"])
        }
        closing.continuation.finish()
        listening.continuation.finish()
    }

    // MARK: Helpers

    func run<T: Sendable>(_ body: @escaping @Sendable (PostgresClient, Logger) async throws -> T) async throws(StoreError) -> T {
        guard !closed.load(ordering: .sequentiallyConsistent) else { throw StoreError.closed }
        return try await withTimeout { client, logger, _ in try await body(client, logger) }
    }

    /// `body` on the pool, failing as unavailable after ``operationTimeout``, even when `body` does not stop then (a
    /// query on a connection a crash left half-open): it is left to end by itself (``Deadline``), and `givenUp` says so.
    private func withTimeout<T: Sendable>(_ body: @escaping @Sendable (PostgresClient, Logger, GivenUp) async throws -> T)
        async throws(StoreError) -> T
    {
        do {
            let timeout = operationTimeout
            let givenUp = GivenUp()
            return try await Deadline.run(
                within: timeout, timedOut: givenUp.mark(StoreError.unavailable("PostgreSQL did not answer within \(timeout)"))
            ) { [client, logger] in
                try await body(client, logger, givenUp)
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw Self.storeError(error)
        }
    }

    /// Set when a call's deadline passed and its caller went on with a failure.
    private final class GivenUp: Sendable {
        private let flag = Atomic<Bool>(false)

        /// Marks the call given up; returns `error`, the caller's failure.
        func mark(_ error: StoreError) -> StoreError {
            flag.store(true, ordering: .sequentiallyConsistent)
            return error
        }

        var isSet: Bool { flag.load(ordering: .sequentiallyConsistent) }
    }

    /// Runs `body` in one transaction (committed when it returns, rolled back when it throws).
    ///
    /// A transaction still running when ``operationTimeout`` passes (its caller was told it failed: an ingest answered
    /// 503, a claim given up, an outcome to be recorded again) is rolled back, not committed, whenever its statements
    /// finish: a late commit would store an event its sender was told was not stored, out of FIFO order with the events
    /// sent after it, or claim deliveries no dispatcher knows of. Only a deadline that passes while the `COMMIT` itself is
    /// on its way leaves the outcome open, as any network timeout does.
    func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws(StoreError) -> T {
        guard !closed.load(ordering: .sequentiallyConsistent) else { throw StoreError.closed }
        return try await withTimeout { client, logger, givenUp in
            try await client.withTransaction(logger: logger) { connection in
                let result = try await body(connection)
                // Queries do not stop at the deadline; this is where a late transaction learns that its caller has gone.
                if givenUp.isSet { throw StoreError.unavailable("the transaction outlived its deadline and was rolled back") }
                return result
            }
        }
    }

    /// A database that cannot be reached is unavailable; a statement the server refused is a failed commit.
    static func storeError(_ error: any Error) -> StoreError {
        if let error = error as? PostgresTransactionError {
            return storeError(error.closureError ?? error.commitError ?? error.beginError ?? error.rollbackError ?? error)
        }
        if let error = error as? PSQLError, error.serverInfo != nil {
            return StoreError.commitFailed(describe(error))
        }
        return StoreError.unavailable(describe(error))
    }

    /// PSQLError's description hides the server's message; this shows it.
    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] {
                let code = error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
                return message + code
            }
            if let underlying = error.underlying { return "\(error.code): \(underlying)" }
            return "\(error.code)"
        }
        return "\(error)"
    }
}

/// A `postgres://` URL taken apart.
///
/// `sslmode` means what it means to libpq (docs/scaling.md): `disable` never encrypts; `allow` and `prefer` encrypt
/// when the server offers TLS, without checking its certificate; `require` always encrypts, without checking the
/// certificate (unless `sslrootcert` is given: then it checks the chain, as libpq does); `verify-ca` checks that the
/// certificate chains to `sslrootcert` (or the system's roots); `verify-full` also that it names the host.
struct PostgresURL: Sendable, Equatable {
    enum SSLMode: String, Sendable, CaseIterable {
        case disable, allow, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    var host: String
    var port: Int
    var username: String
    var password: String?
    var database: String?
    var sslMode: SSLMode
    /// `sslrootcert`: the CA file certificates are checked against (nil, or `system`: the system's roots).
    var sslRootCert: String?

    /// What is checked of the server's certificate, after `require`'s libpq rule (a root file makes it `verify-ca`).
    var verification: CertificateVerification {
        switch sslMode {
        case .disable, .allow, .prefer: .none
        case .require: sslRootCert == nil ? .none : .noHostnameVerification
        case .verifyCA: .noHostnameVerification
        case .verifyFull: .fullVerification
        }
    }

    private var tlsConfiguration: TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = verification
        if let sslRootCert, sslRootCert != "system" { configuration.trustRoots = .file(sslRootCert) }
        return configuration
    }

    /// The pool's TLS settings.
    var tls: PostgresClient.Configuration.TLS {
        switch sslMode {
        case .disable: .disable
        case .allow, .prefer: .prefer(tlsConfiguration)
        case .require, .verifyCA, .verifyFull: .require(tlsConfiguration)
        }
    }

    /// The same, for a single connection (building the context reads `sslrootcert`).
    func connectionTLS() throws -> PostgresConnection.Configuration.TLS {
        switch sslMode {
        case .disable: .disable
        case .allow, .prefer: .prefer(try NIOSSLContext(configuration: tlsConfiguration))
        case .require, .verifyCA, .verifyFull: .require(try NIOSSLContext(configuration: tlsConfiguration))
        }
    }

    /// The URL with the password left out, for logs and messages.
    var display: String {
        "postgres://\(username)@\(host):\(port)/\(database ?? "")"
    }

    /// A reason naming what is wrong, for the config error.
    struct Invalid: Error, CustomStringConvertible {
        var description: String
    }

    init(_ text: String) throws {
        guard let components = URLComponents(string: text), components.scheme == "postgres" || components.scheme == "postgresql" else {
            throw Invalid(description: "is not a URL of the form postgres://user:password@host:5432/database")
        }
        guard let host = components.host, !host.isEmpty else { throw Invalid(description: "names no host (postgres://user@HOST/db)") }
        guard let user = components.user, !user.isEmpty else { throw Invalid(description: "names no user (postgres://USER@host/db)") }
        self.host = host
        port = components.port ?? 5432
        username = user.removingPercentEncoding ?? user
        password = components.password.map { $0.removingPercentEncoding ?? $0 }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        database = path.isEmpty ? nil : path
        sslMode = .prefer
        for item in components.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                let mode = item.value ?? ""
                guard let known = SSLMode(rawValue: mode) else {
                    let names = SSLMode.allCases.map(\.rawValue).joined(separator: ", ")
                    throw Invalid(description: "has sslmode=\(mode.prefix(40)); use one of \(names)")
                }
                sslMode = known
            case "sslrootcert":
                let file = item.value ?? ""
                if file == "system" {
                    sslRootCert = file
                    continue
                }
                guard file.hasPrefix("/") else {
                    throw Invalid(description: "has sslrootcert=\(file.prefix(200)); give the CA file's absolute path, or system")
                }
                do {
                    _ = try NIOSSLCertificate.fromPEMFile(file)
                } catch {
                    throw Invalid(description: "has sslrootcert=\(file.prefix(200)), which cannot be read as PEM certificates (\(error))")
                }
                sslRootCert = file
            default:
                throw Invalid(
                    description: "has an unknown parameter '\(item.name.prefix(40))' (only sslmode and sslrootcert are understood)")
            }
        }
        if sslMode == .verifyFull, AdminHost.isIPLiteral(host) {
            throw Invalid(
                description:
                    "has sslmode=verify-full with the address \(host): verify-full checks the host name, so connect by the name "
                    + "the server's certificate gives, or use verify-ca")
        }
    }
}
