import Foundation
import GRDB
import Testing

@testable import Host

/// The storage protocol's promises, checked against every backend (SQLite and a real PostgreSQL), role by role: the
/// ingest writer (``EventWriter``), the delivery queue (``DeliveryQueue``), the records operators read
/// (``EventRecords``) and upkeep (``StoreMaintenance``); and the schema both hold (``StoreSchema``).
@Suite("Store contract")
struct StoreContractTests {
    static let t0: Int64 = 1_795_000_000_000

    static func event(
        _ id: String, source: String = "app", at time: Int64 = t0, key: String? = nil, to destinations: [String] = ["out"],
        body: String = #"{"n":1}"#
    ) -> NewEvent {
        NewEvent(
            event: StoredEvent(
                id: id, source: source, receivedAt: time, contentType: "application/json", headersJSON: #"{"x-test":"yes"}"#,
                body: Array(body.utf8), fieldsJSON: #"{"n":1}"#),
            idempotencyKey: key,
            deliveries: destinations.map { NewDelivery(id: "\(id)-\($0)", destination: $0) })
    }

    static func outcome(_ id: String, _ status: DeliveryStatus, next: Int64? = nil, error: String? = nil, number: Int = 1)
        -> DeliveryOutcome
    {
        DeliveryOutcome(
            deliveryID: id, status: status, nextAttemptAt: next,
            attempt: AttemptRecord(
                number: number, startedAt: t0 + 10, durationMilliseconds: 5, httpStatus: status == .delivered ? 200 : 500,
                responseBody: Array("answer \(number)".utf8), error: error),
            error: error)
    }

    @Test(
        "insert stores events whole; an idempotency key seen before, or earlier in the batch, is a duplicate",
        arguments: TestBackend.enabled)
    func insertAndDuplicates(backend: TestBackend) async throws {
        try await withTestStore(backend) { store in
            let body = "{\"binary\":\"\u{00e9}\"}"
            let first = try await store.insert([
                Self.event("e1", key: "k1", body: body), Self.event("e2", key: "k1"), Self.event("e3", source: "other", key: "k1"),
                Self.event("e4"),
            ])
            #expect(first == [.stored, .duplicate(originalID: "e1"), .stored, .stored])
            let second = try await store.insert([Self.event("e5", key: "k1"), Self.event("e6", source: "other", key: "k1")])
            #expect(second == [.duplicate(originalID: "e1"), .duplicate(originalID: "e3")])

            let detail = try #require(try await store.eventDetail(id: "e1"))
            #expect(detail.event.body == Array(body.utf8))
            #expect(detail.event.headersJSON == #"{"x-test":"yes"}"#)
            #expect(detail.event.receivedAt == Self.t0)
            #expect(detail.idempotencyKey == "k1")
            #expect(detail.deliveries.map(\.id) == ["e1-out"])
            #expect(detail.deliveries.first?.status == .pending)
            #expect(try await store.eventDetail(id: "e2") == nil)
            #expect(try await store.queueDepths()["out"]?[.pending] == 3)
        }
    }

    @Test(
        "claims take due deliveries in due-then-ingest order, once, with a lease; nextDue sees the earliest", arguments: TestBackend.enabled
    )
    func claims(backend: TestBackend) async throws {
        try await withTestStore(backend) { store in
            _ = try await store.insert([Self.event("a", at: Self.t0), Self.event("b", at: Self.t0 + 1), Self.event("c", at: Self.t0 + 2)])
            #expect(try await store.nextDue(destination: "out", fifo: false) == Self.t0)
            #expect(
                try await store.claimDue(destination: "out", fifo: false, now: Self.t0 - 1, limit: 10, leaseUntil: Self.t0 + 1000).isEmpty)
            let claimed = try await store.claimDue(destination: "out", fifo: false, now: Self.t0 + 5, limit: 2, leaseUntil: Self.t0 + 1000)
            #expect(claimed.map(\.id) == ["a-out", "b-out"])
            #expect(claimed.first?.event.body == Array(#"{"n":1}"#.utf8))
            let rest = try await store.claimDue(destination: "out", fifo: false, now: Self.t0 + 5, limit: 10, leaseUntil: Self.t0 + 1000)
            #expect(rest.map(\.id) == ["c-out"])
            #expect(
                try await store.claimDue(destination: "out", fifo: false, now: Self.t0 + 5, limit: 10, leaseUntil: Self.t0 + 1000).isEmpty)
            #expect(try await store.queueDepths()["out"]?[.inFlight] == 3)

            // A retry due later goes behind; an expired lease comes back; a release puts a claim back at once.
            try await store.record([Self.outcome("a-out", .retrying, next: Self.t0 + 500, error: "HTTP 500")])
            #expect(try await store.releaseExpiredLeases(now: Self.t0 + 999) == 0)
            try await store.release(deliveryIDs: ["b-out"])
            #expect(try await store.releaseExpiredLeases(now: Self.t0 + 1001) == 1)
            let again = try await store.claimDue(
                destination: "out", fifo: false, now: Self.t0 + 2000, limit: 10, leaseUntil: Self.t0 + 3000)
            #expect(Set(again.map(\.id)) == ["a-out", "b-out", "c-out"])
            #expect(again.first(where: { $0.id == "a-out" })?.attempts == 1)
        }
    }

    @Test("FIFO claims only the line's head, and a head in flight holds the line", arguments: TestBackend.enabled)
    func fifo(backend: TestBackend) async throws {
        try await withTestStore(backend) { store in
            for index in 0..<3 { _ = try await store.insert([Self.event("f\(index)", at: Self.t0 + Int64(index))]) }
            let now = Self.t0 + 100
            let head = try await store.claimDue(destination: "out", fifo: true, now: now, limit: 5, leaseUntil: now + 1000)
            #expect(head.map(\.id) == ["f0-out"])
            #expect(try await store.claimDue(destination: "out", fifo: true, now: now, limit: 5, leaseUntil: now + 1000).isEmpty)
            #expect(try await store.nextDue(destination: "out", fifo: true) == nil)
            // A failing head stays the head, even when a later one would be due sooner.
            try await store.record([Self.outcome("f0-out", .retrying, next: now + 50, error: "HTTP 500")])
            #expect(try await store.nextDue(destination: "out", fifo: true) == now + 50)
            #expect(try await store.claimDue(destination: "out", fifo: true, now: now + 10, limit: 5, leaseUntil: now + 1000).isEmpty)
            let retried = try await store.claimDue(destination: "out", fifo: true, now: now + 60, limit: 5, leaseUntil: now + 1000)
            #expect(retried.map(\.id) == ["f0-out"])
            try await store.record([Self.outcome("f0-out", .delivered, number: 2)])
            let next = try await store.claimDue(destination: "out", fifo: true, now: now + 60, limit: 5, leaseUntil: now + 1000)
            #expect(next.map(\.id) == ["f1-out"])
        }
    }

    @Test("record logs every attempt, keeps the last error when none is given, and counts parts sent", arguments: TestBackend.enabled)
    func record(backend: TestBackend) async throws {
        try await withTestStore(backend) { store in
            _ = try await store.insert([Self.event("r", to: ["out", "other"])])
            _ = try await store.claimDue(destination: "out", fifo: false, now: Self.t0, limit: 1, leaseUntil: Self.t0 + 1000)
            try await store.record([Self.outcome("r-out", .retrying, next: Self.t0 + 10, error: "HTTP 500: boom")])
            var waiting = Self.outcome("r-out", .retrying, next: Self.t0 + 20, error: nil, number: 2)
            waiting.countsAsAttempt = false
            waiting.partsSent = 2
            try await store.record([waiting])
            try await store.record([
                DeliveryOutcome(deliveryID: "r-other", status: .skipped, nextAttemptAt: nil, attempt: nil, error: "formatter skipped it")
            ])
            let detail = try #require(try await store.eventDetail(id: "r"))
            let out = try #require(detail.deliveries.first { $0.destination == "out" })
            #expect(out.status == .retrying)
            #expect(out.attempts == 1)
            #expect(out.lastError == "HTTP 500: boom")
            #expect(out.nextAttemptAt == Self.t0 + 20)
            #expect(out.history.map(\.number) == [1, 2])
            #expect(out.history.first?.httpStatus == 500)
            #expect(out.history.first?.responseBody == Array("answer 1".utf8))
            #expect(out.history.first?.error == "HTTP 500: boom")
            #expect(out.history.last?.error == nil)
            let claimed = try await store.claimDue(destination: "out", fifo: false, now: Self.t0 + 30, limit: 1, leaseUntil: Self.t0 + 1000)
            #expect(claimed.first?.partsSent == 2)
            let other = try #require(detail.deliveries.first { $0.destination == "other" })
            #expect(other.status == .skipped)
            #expect(other.history.isEmpty)
        }
    }

    @Test(
        "replay supersedes the newest delivery per destination; listings show current deliveries, a page at a time",
        arguments: TestBackend.enabled)
    func replayAndListings(backend: TestBackend) async throws {
        try await withTestStore(backend) { store in
            let base = Clock.milliseconds() - 60_000
            for index in 0..<5 {
                _ = try await store.insert([
                    Self.event(
                        EventID.make(milliseconds: base + Int64(index)), source: index % 2 == 0 ? "even" : "odd", at: base + Int64(index))
                ])
            }
            let all = try await store.listEvents(RecordFilter(), cursor: nil, limit: 3)
            #expect(all.items.count == 3)
            let more = try await store.listEvents(RecordFilter(), cursor: all.nextCursor, limit: 3)
            #expect(more.items.count == 2)
            #expect(more.nextCursor == nil)
            #expect(Set((all.items + more.items).map(\.id)).count == 5)
            #expect(all.items.map(\.receivedAt) == all.items.map(\.receivedAt).sorted(by: >))
            #expect(try await store.listEvents(RecordFilter(source: "even"), cursor: nil, limit: 10).items.count == 3)

            // Two delivered, one dead; replay by filter takes the dead one only.
            let ids = (all.items + more.items).map(\.id).sorted()
            let claimed = try await store.claimDue(
                destination: "out", fifo: false, now: Clock.milliseconds(), limit: 3, leaseUntil: Clock.milliseconds() + 60_000)
            #expect(claimed.count == 3)
            try await store.record([
                Self.outcome(claimed[0].id, .delivered), Self.outcome(claimed[1].id, .delivered),
                Self.outcome(claimed[2].id, .dead, error: "HTTP 404"),
            ])
            let dead = try await store.listDeliveries(RecordFilter(status: .dead), cursor: nil, limit: 10)
            #expect(dead.items.map(\.id) == [claimed[2].id])
            #expect(dead.items.first?.lastError == "HTTP 404")
            let candidates = try await store.replayCandidates(
                RecordFilter(status: .dead), createdBefore: Clock.milliseconds() + 1, cursor: nil, limit: 10)
            let replayed = try await store.replay(deliveries: candidates.items, now: Clock.milliseconds())
            #expect(replayed.count == 1)
            #expect(try await store.replay(deliveries: candidates.items, now: Clock.milliseconds()).isEmpty, "superseded already")
            #expect(try await store.listDeliveries(RecordFilter(status: .dead), cursor: nil, limit: 10).items.isEmpty)
            let pending = try await store.listDeliveries(RecordFilter(status: .pending), cursor: nil, limit: 10)
            #expect(pending.items.contains { $0.id == replayed[0] && $0.replayOf == claimed[2].id })

            // Replay of one event: a fresh delivery per destination it had; an unknown event is nil.
            let again = try #require(try await store.replay(eventID: ids[0], fallbackDestinations: ["x"], now: Clock.milliseconds()))
            #expect(again.count == 1)
            let detail = try #require(try await store.eventDetail(id: ids[0]))
            #expect(detail.deliveries.count == 2)
            #expect(detail.deliveries.contains { $0.id == again[0] && $0.replayOf != nil && $0.destination == "out" })
            #expect(try await store.replay(eventID: "nope", fallbackDestinations: ["x"], now: 0) == nil)
        }
    }

    @Test("purge deletes old events whose deliveries are all finished, a batch at a time", arguments: TestBackend.enabled)
    func purge(backend: TestBackend) async throws {
        try await withTestStore(backend) { store in
            _ = try await store.insert([Self.event("old1", at: 1000), Self.event("old2", at: 2000), Self.event("new", at: Self.t0)])
            let claimed = try await store.claimDue(destination: "out", fifo: false, now: Self.t0, limit: 1, leaseUntil: Self.t0 + 10)
            #expect(claimed.map(\.id) == ["old1-out"])
            try await store.record([Self.outcome("old1-out", .delivered)])
            #expect(try await store.purge(receivedBefore: 5000, limit: 10) == 1, "old2 is still pending")
            #expect(try await store.eventDetail(id: "old1") == nil)
            #expect(try await store.eventDetail(id: "old2") != nil)
            #expect(try await store.purge(receivedBefore: 5000, limit: 10) == 0)
        }
    }

    @Test("at start, claims left by a stopped process go back to pending", arguments: TestBackend.enabled)
    func abandonedClaims(backend: TestBackend) async throws {
        try await withTestDatabase(backend) { database in
            let first = try await database.open()
            _ = try await first.insert([Self.event("x")])
            let now = Clock.milliseconds()
            #expect(try await first.claimDue(destination: "out", fifo: false, now: now, limit: 1, leaseUntil: now + 600_000).count == 1)
            try await first.close()
            let second = try await database.open()
            #expect(try await second.releaseAbandonedClaims() == 1)
            #expect(try await second.queueDepths()["out"]?[.pending] == 1)
            try await second.close()
        }
    }

    @Test("destinations suspended by an operator are recorded once and survive a reopen until resumed", arguments: TestBackend.enabled)
    func suspensions(backend: TestBackend) async throws {
        try await withTestDatabase(backend) { database in
            let first = try await database.open()
            #expect(try await first.suspendedDestinations().isEmpty)
            try await first.setSuspended(true, destination: "out")
            try await first.setSuspended(true, destination: "out")
            try await first.setSuspended(true, destination: "slack")
            try await first.setSuspended(false, destination: "never-suspended")
            #expect(try await first.suspendedDestinations() == ["out", "slack"])
            try await first.close()
            let second = try await database.open()
            #expect(try await second.suspendedDestinations() == ["out", "slack"])
            try await second.setSuspended(false, destination: "out")
            #expect(try await second.suspendedDestinations() == ["slack"])
            try await second.close()
        }
    }

    // MARK: DeliveryQueue, beyond claims

    @Test(
        "a lease that ran out, or a claim given back, returns the delivery to pending; crashes in a row quarantine it, and a recorded attempt resets the count",
        arguments: TestBackend.enabled)
    func releasesAndCrashes(backend: TestBackend) async throws {
        try await withTestStore(backend) { store in
            _ = try await store.insert([Self.event("a"), Self.event("b"), Self.event("c")])
            let now = Clock.milliseconds()
            let claimed = try await store.claimDue(destination: "out", fifo: false, now: now, limit: 3, leaseUntil: now + 100)
            #expect(claimed.map(\.id) == ["a-out", "b-out", "c-out"])
            try await store.release(deliveryIDs: ["a-out"])
            #expect(try await store.queueDepths()["out"] == [.pending: 1, .inFlight: 2])
            #expect(try await store.releaseExpiredLeases(now: now + 50) == 0, "the lease has not run out")
            #expect(try await store.releaseExpiredLeases(now: now + 101) == 2)
            #expect(try await store.queueDepths()["out"] == [.pending: 3])

            let crash = { (id: String) in CrashRecord(deliveryID: id, quarantineAt: 2, reason: "the process died twice during it") }
            #expect(try await store.recordCrashes([crash("a-out"), crash("b-out")]).isEmpty, "one crash is not a row of two")
            try await store.record([Self.outcome("b-out", .retrying, next: now)])
            let quarantined = try await store.recordCrashes([crash("a-out"), crash("b-out")])
            #expect(
                quarantined == [
                    QuarantinedDelivery(deliveryID: "a-out", eventID: "a", source: "app", destination: "out", reason: crash("a-out").reason)
                ])
            let detail = try #require(try await store.eventDetail(id: "a"))
            #expect(detail.deliveries.first?.status == .dead)
            #expect(detail.deliveries.first?.lastError == crash("a-out").reason)
            #expect(detail.deliveries.first?.history.map(\.error) == [crash("a-out").reason], "the quarantine is logged as an attempt")
            #expect(try await store.eventDetail(id: "b")?.deliveries.first?.status == .retrying, "b's count was reset by its attempt")
            // A finished delivery is never counted.
            #expect(try await store.recordCrashes([crash("a-out"), crash("a-out")]).isEmpty)
        }
    }

    // MARK: EventRecords

    @Test("listings filter by source, destination, current status and time, the same on every backend", arguments: TestBackend.enabled)
    func filters(backend: TestBackend) async throws {
        try await withTestStore(backend) { store in
            let base = Clock.milliseconds() - 60_000
            var ids: [String] = []
            for index in 0..<6 {
                let id = EventID.make(milliseconds: base + Int64(index) * 10)
                ids.append(id)
                _ = try await store.insert([
                    Self.event(
                        id, source: index < 3 ? "github" : "stripe", at: base + Int64(index) * 10,
                        to: index % 2 == 0 ? ["chat", "log"] : ["log"])
                ])
            }
            // Every chat delivery is dead; the log ones are delivered.
            let now = Clock.milliseconds()
            let chat = try await store.claimDue(destination: "chat", fifo: false, now: now, limit: 10, leaseUntil: now + 60_000)
            let log = try await store.claimDue(destination: "log", fifo: false, now: now, limit: 10, leaseUntil: now + 60_000)
            #expect(chat.count == 3 && log.count == 6)
            try await store.record(chat.map { Self.outcome($0.id, .dead, error: "HTTP 410") } + log.map { Self.outcome($0.id, .delivered) })

            func events(_ filter: RecordFilter) async throws -> [String] {
                try await store.listEvents(filter, cursor: nil, limit: 50).items.map(\.id)
            }
            func deliveries(_ filter: RecordFilter) async throws -> [String] {
                try await store.listDeliveries(filter, cursor: nil, limit: 50).items.map(\.id)
            }
            #expect(try await events(RecordFilter()) == ids.reversed())
            #expect(try await events(RecordFilter(source: "stripe")) == [ids[5], ids[4], ids[3]])
            #expect(try await events(RecordFilter(destination: "chat")) == [ids[4], ids[2], ids[0]])
            #expect(try await events(RecordFilter(source: "github", status: .dead)) == [ids[2], ids[0]])
            #expect(try await events(RecordFilter(since: base + 20, until: base + 40)) == [ids[3], ids[2]])
            #expect(try await events(RecordFilter(destination: "nowhere")).isEmpty)
            #expect(try await deliveries(RecordFilter(destination: "chat", status: .dead)) == chat.map(\.id).reversed())
            #expect(try await deliveries(RecordFilter(source: "stripe", destination: "log")) == log.suffix(3).map(\.id).reversed())
            #expect(try await deliveries(RecordFilter(status: .pending)).isEmpty)
            let listed = try #require(try await store.listEvents(RecordFilter(source: "stripe"), cursor: nil, limit: 1).items.first)
            #expect(listed.deliveries.map(\.destination) == ["log"], "an event's summary shows its current deliveries")

            // Replay candidates: finished, current, created before the bound, oldest first, a page at a time.
            let first = try await store.replayCandidates(RecordFilter(destination: "chat"), createdBefore: now + 1, cursor: nil, limit: 2)
            #expect(first.items.map(\.id) == Array(chat.map(\.id).prefix(2)))
            let second = try await store.replayCandidates(
                RecordFilter(destination: "chat"), createdBefore: now + 1, cursor: first.nextCursor, limit: 2)
            #expect(second.items.map(\.id) == [chat[2].id] && second.nextCursor == nil)
            #expect(try await store.replayCandidates(RecordFilter(), createdBefore: base, cursor: nil, limit: 10).items.isEmpty)
            #expect(try await store.queueDepths() == ["chat": [.dead: 3]])
        }
    }

    // MARK: StoreMaintenance

    @Test("ping answers while the store is open; after close every call fails with the store's error", arguments: TestBackend.enabled)
    func pingAndClose(backend: TestBackend) async throws {
        try await withTestDatabase(backend) { database in
            let store = try await database.open()
            try await store.ping()
            try await store.close()
            await #expect(throws: StoreError.self) { try await store.ping() }
            await #expect(throws: StoreError.self) { try await store.insert([Self.event("late")]) }
            await #expect(throws: StoreError.self) { try await store.eventDetail(id: "late") }
        }
    }

    // MARK: The schema

    @Test(
        "every backend's migrated tables hold the columns of the shared schema, and only those (and its own extras)",
        arguments: TestBackend.enabled)
    func schema(backend: TestBackend) async throws {
        try await withTestStore(backend) { store in
            let extras = backend == .postgres ? StoreSchema.postgresExtras : [:]
            for table in Set(StoreSchema.columns.keys).union(extras.keys) {
                let expected = (StoreSchema.columns[table] ?? []).union(extras[table] ?? [])
                let actual = try await Self.columns(of: table, in: store)
                #expect(actual == expected, "table \(table)")
            }
        }
    }

    static func columns(of table: String, in store: any EventStore) async throws -> Set<String> {
        if let sqlite = store as? SQLiteStore {
            return try await sqlite.read { db in Set(try Row.fetchAll(db, sql: "PRAGMA table_info(\(table))").map { $0["name"] as String })
            }
        }
        let postgres = try #require(store as? PostgresStore)
        return try await postgres.run { client, logger in
            let rows = try await client.rows(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = \(table)",
                logger: logger)
            return Set(try rows.map { row throws(StoreError) in try row.text("column_name") })
        }
    }

    // MARK: Damaged rows

    @Test(
        "a row damaged by hand (text where a number belongs, an unknown status) fails the calls that read it with a store error naming the column, never a trap; fixed, it is served again"
    )
    func damagedRows() async throws {
        let store = try SQLiteStore(path: TestPaths.temporaryDirectory("damaged") + "/store.sqlite")
        _ = try await store.insert([Self.event("e1"), Self.event("e2", to: ["other"])])
        // SQLite keeps a text that is not a number as text, even in an INTEGER column.
        try await store.write { db in try db.execute(sql: "UPDATE deliveries SET attempts = 'many' WHERE id = 'e1-out'") }
        let now = Clock.milliseconds()
        func expectNamesColumn(_ name: String, _ call: () async throws -> Void) async {
            let error = await #expect(throws: StoreError.self, "\(name)") { try await call() }
            #expect(error?.description.contains("column attempts") == true, "\(name): \(String(describing: error))")
        }
        await expectNamesColumn("claim") {
            _ = try await store.claimDue(destination: "out", fifo: false, now: now, limit: 5, leaseUntil: now + 1000)
        }
        await expectNamesColumn("detail") { _ = try await store.eventDetail(id: "e1") }
        await expectNamesColumn("listing") { _ = try await store.listDeliveries(RecordFilter(), cursor: nil, limit: 10) }
        await expectNamesColumn("events") { _ = try await store.listEvents(RecordFilter(), cursor: nil, limit: 10) }
        // Other destinations' work is untouched.
        #expect(
            try await store.claimDue(destination: "other", fifo: false, now: now, limit: 5, leaseUntil: now + 1000).map(\.id) == [
                "e2-other"
            ])
        try await store.write { db in try db.execute(sql: "UPDATE deliveries SET attempts = 0, status = 'lost' WHERE id = 'e1-out'") }
        let error = await #expect(throws: StoreError.self) { try await store.listDeliveries(RecordFilter(), cursor: nil, limit: 10) }
        #expect(error?.description.contains("unknown delivery status 'lost'") == true, "\(String(describing: error))")
        try await store.write { db in try db.execute(sql: "UPDATE deliveries SET status = 'pending' WHERE id = 'e1-out'") }
        #expect(
            try await store.claimDue(destination: "out", fifo: false, now: now, limit: 5, leaseUntil: now + 1000).map(\.id) == ["e1-out"])
        try await store.close()
    }
}
