import Logging
import ServiceLifecycle

/// The durable store behind ingest, delivery and replay: events, their deliveries and every attempt, in the roles its
/// users have. Each user depends on the role it needs; the server holds the whole.
///
/// All times are milliseconds since the Unix epoch. Implementations commit before returning: when `insert` returns, the
/// events are on disk (fsynced). Every call fails with one type, ``StoreError``, reads included; ingest and the admin
/// API answer 503 for any of them.
typealias EventStore = EventWriter & DeliveryQueue & EventRecords & StoreMaintenance

/// Ingest's writer (and the Alerter's).
protocol EventWriter: Sendable {
    /// Writes a batch of events and their deliveries in one transaction (one fsync). Events whose idempotency key was
    /// seen before for their source (also earlier in the same batch) are not stored and come back as duplicates.
    func insert(_ events: [NewEvent]) async throws(StoreError) -> [InsertResult]
}

/// The queue the delivery engine claims from: due work is claimed with a lease, so work survives any crash and expired
/// leases return to pending.
protocol DeliveryQueue: Sendable {
    /// When the next delivery to `destination` is due (`nil`: none waiting). With `fifo`, only the line's head counts,
    /// and a head in flight means nothing is due until it finishes. A read: it never blocks writers.
    func nextDue(destination: String, fifo: Bool) async throws(StoreError) -> Int64?

    /// Claims up to `limit` deliveries to `destination` that are due at `now` (with `fifo`, at most the line's head, in
    /// ingest order): marks them in flight until `leaseUntil` and returns them with their events.
    func claimDue(destination: String, fifo: Bool, now: Int64, limit: Int, leaseUntil: Int64) async throws(StoreError)
        -> [ClaimedDelivery]

    /// Records attempt outcomes in one transaction.
    func record(_ outcomes: [DeliveryOutcome]) async throws(StoreError)

    /// Returns deliveries whose lease expired before `now` to pending; returns how many.
    func releaseExpiredLeases(now: Int64) async throws(StoreError) -> Int

    /// Returns these claimed deliveries, not sent, to pending (claimed ahead and then not started).
    func release(deliveryIDs: [String]) async throws(StoreError)

    /// Returns to pending the deliveries left in flight by processes that are gone, at start-up: on SQLite every one
    /// (one process owns the file), on PostgreSQL those of instances no longer seen and those whose lease ran out.
    func releaseAbandonedClaims() async throws(StoreError) -> Int

    /// Counts an abnormal exit of the process against each of these deliveries (unless it is finished), and
    /// quarantines those that reached their threshold: dead, with the reason, and an attempt row saying so. Returns the
    /// deliveries quarantined. Recording an attempt's outcome resets the count: crashes count only in a row.
    func recordCrashes(_ crashes: [CrashRecord]) async throws(StoreError) -> [QuarantinedDelivery]

    /// How often the engine should look for expired leases (``releaseExpiredLeases(now:)``).
    var maintenanceInterval: Duration { get }

    /// Calls `handler` when another process (or this one) changed what the engine depends on, as soon as the store can
    /// tell (PostgreSQL's `LISTEN/NOTIFY`): work that may be due, or a destination suspended or resumed. A store that
    /// cannot tell never calls it; the engine's idle poll and maintenance pass find such changes.
    func onChange(_ handler: @escaping @Sendable (StoreChange) -> Void)

    /// The destinations an operator suspended (admin API), shared by every instance and kept across restarts.
    func suspendedDestinations() async throws(StoreError) -> Set<String>

    /// Records that an operator suspended (true) or resumed (false) `destination`.
    func setSuspended(_ suspended: Bool, destination: String) async throws(StoreError)
}

/// What the admin API and the CLI read, and the replays they schedule.
protocol EventRecords: Sendable {
    /// One event with its deliveries and their attempts; `nil` when it does not exist.
    func eventDetail(id: String) async throws(StoreError) -> EventDetail?

    /// How many deliveries each destination has in each unfinished state (pending, in flight, retrying) and dead.
    func queueDepths() async throws(StoreError) -> [String: [DeliveryStatus: Int]]

    /// Schedules a fresh delivery of the event to each destination it was delivered to before (or to `destinations`
    /// when the event had none). Returns the new delivery ids, or `nil` when the event does not exist.
    func replay(eventID: String, fallbackDestinations: [String], now: Int64) async throws(StoreError) -> [String]?

    /// Events matching `filter`, newest first, `limit` at a time; `cursor` is the previous page's `nextCursor`.
    func listEvents(_ filter: RecordFilter, cursor: String?, limit: Int) async throws(StoreError) -> Page<EventSummary>

    /// Current deliveries matching `filter`, newest first, `limit` at a time.
    func listDeliveries(_ filter: RecordFilter, cursor: String?, limit: Int) async throws(StoreError) -> Page<DeliverySummary>

    /// Current, finished deliveries matching `filter` and created before `createdBefore`, oldest first, `limit` at a
    /// time: what a replay by filter supersedes. The bound keeps the deliveries a replay creates out of later pages.
    func replayCandidates(_ filter: RecordFilter, createdBefore: Int64, cursor: String?, limit: Int) async throws(StoreError)
        -> Page<DeliverySummary>

    /// Schedules a fresh delivery superseding each of `deliveries` (same event, same destination) in one transaction;
    /// returns the new ids. A delivery that was superseded meanwhile is skipped.
    func replay(deliveries: [DeliverySummary], now: Int64) async throws(StoreError) -> [String]
}

/// Upkeep: retention, health, and the end.
protocol StoreMaintenance: Sendable {
    /// Deletes up to `limit` events received before `cutoff` whose deliveries are all finished, with their deliveries
    /// and attempts; returns how many. Callers repeat until it returns less than `limit`, so no transaction is long.
    func purge(receivedBefore cutoff: Int64, limit: Int) async throws(StoreError) -> Int

    /// Checks that the store answers.
    func ping() async throws(StoreError)

    /// Closes connections; further calls fail. It also ends ``services``.
    func close() async throws(StoreError)

    /// What must run while the store is used (PostgreSQL: the connection pool, the instance's heartbeat and `LISTEN`),
    /// in start order, for a ``ServiceGroup`` to run: the server's group runs them first, so they stop last, after
    /// everything that writes to the store; a CLI command runs them beside its work (``withStoreServices(_:_:)``).
    var services: [ServiceGroupConfiguration.ServiceConfiguration] { get }
}

/// What changed in the store, as announced to ``DeliveryQueue/onChange(_:)``.
enum StoreChange: String, Sendable {
    /// Work that may be due was committed.
    case newWork = "work"
    /// A destination was suspended or resumed.
    case destinationStates = "destinations"
}

/// An event ready to be stored, with one delivery per destination.
struct NewEvent: Sendable {
    var event: StoredEvent
    /// Requests with the same key for the same source are duplicates.
    var idempotencyKey: String?
    var deliveries: [NewDelivery]
}

/// A delivery to create with an event.
struct NewDelivery: Sendable {
    var id: String
    var destination: String
}

/// What happened to one event of an insert batch.
enum InsertResult: Sendable, Equatable {
    case stored
    /// The idempotency key was seen before; the original event's id.
    case duplicate(originalID: String)
}

/// The status of a delivery, as stored.
enum DeliveryStatus: String, Sendable, CaseIterable {
    case pending
    case inFlight = "in_flight"
    case delivered
    case retrying
    case dead
    case skipped
}

/// An event as stored: what was received, with the fields mapped from it.
struct StoredEvent: Sendable {
    var id: String
    var source: String
    var receivedAt: Int64
    var contentType: String
    /// The request's headers (lowercase names), as a JSON object text.
    var headersJSON: String
    var body: [UInt8]
    /// The mapped fields, as a JSON object text.
    var fieldsJSON: String
}

/// A delivery claimed for an attempt.
struct ClaimedDelivery: Sendable {
    var id: String
    var destination: String
    /// Attempts made before this one.
    var attempts: Int
    var event: StoredEvent
    /// For a formatter that sends several requests per event: how many were delivered by earlier attempts.
    var partsSent = 0
    /// Earlier attempts whose format call crashed its plugin or missed its deadline.
    var pluginFailures = 0
}

/// A delivery that was in flight when the process ended abnormally (from the in-flight journal).
struct CrashRecord: Sendable, Equatable {
    var deliveryID: String
    /// Quarantine it once this many abnormal exits in a row were counted against it (1: at once).
    var quarantineAt: Int
    /// The reason a quarantined delivery is dead with.
    var reason: String
}

/// A delivery quarantined by ``DeliveryQueue/recordCrashes(_:)``.
struct QuarantinedDelivery: Sendable, Equatable {
    var deliveryID: String
    var eventID: String
    var source: String
    var destination: String
    var reason: String
}

/// The result of one attempt, to record.
struct DeliveryOutcome: Sendable {
    var deliveryID: String
    /// The status after this attempt: delivered, retrying, dead, skipped, or pending (released without an attempt).
    var status: DeliveryStatus
    /// When to try again (retrying / pending).
    var nextAttemptAt: Int64?
    /// The attempt to log; `nil` when no attempt was made (a release at shutdown).
    var attempt: AttemptRecord?
    var error: String?
    /// False when the attempt does not count against the retry schedule (a rate-limit wait).
    var countsAsAttempt = true
    /// Of a multi-request delivery, how many requests are delivered now (`nil`: unchanged).
    var partsSent: Int? = nil
    /// How many attempts' format calls have crashed or timed out now (`nil`: unchanged).
    var pluginFailures: Int? = nil
}

/// One logged attempt.
struct AttemptRecord: Sendable, Equatable {
    var number: Int
    var startedAt: Int64
    var durationMilliseconds: Int64
    var httpStatus: Int?
    /// At most the destination's `store_response` bytes of the response body (``AttemptRecord/defaultResponseBytes``
    /// unless set, at most ``AttemptRecord/maximumResponseBytes``).
    var responseBody: [UInt8]
    var error: String?

    /// What is stored of a response body unless the destination says otherwise.
    static let defaultResponseBytes = 4096
    /// The most `store_response` may keep; also what is read of an answer (a JSON `retry_after` is read from it).
    static let maximumResponseBytes = 65_536
}

/// An event with everything that happened to it.
struct EventDetail: Sendable {
    struct Delivery: Sendable {
        var id: String
        var destination: String
        var status: DeliveryStatus
        var attempts: Int
        var nextAttemptAt: Int64?
        var lastError: String?
        var replayOf: String?
        var createdAt: Int64
        var history: [AttemptRecord]
    }

    var event: StoredEvent
    var idempotencyKey: String?
    var deliveries: [Delivery]
}

/// Runs `body` while `store`'s services run, then closes the store, which ends them.
func withStoreServices<T>(_ store: any EventStore, _ body: () async throws -> T) async throws -> T {
    let services = store.services
    let group = ServiceGroup(
        configuration: .init(services: services, logger: Logger(label: "hookproxy.store", factory: { _ in SwiftLogNoOpLogHandler() })))
    return try await withThrowingTaskGroup(of: Void.self) { running in
        running.addTask { try await group.run() }
        let result: Result<T, any Error>
        do {
            result = .success(try await body())
        } catch {
            result = .failure(error)
        }
        try? await store.close()
        await group.triggerGracefulShutdown()
        try? await running.waitForAll()
        return try result.get()
    }
}
