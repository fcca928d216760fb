import Foundation
import PostgresNIO
import Synchronization
import Testing

@testable import Host

/// Several instances on one PostgreSQL database: migrations, claims, FIFO heads, dead instances and wake-ups.
@Suite("PostgreSQL instances", .enabled(if: TestBackend.postgresEnabled))
struct PostgresInstancesTests {
    @Test("three instances starting at once on an empty database migrate it once")
    func concurrentMigrations() async throws {
        try await withTestDatabase(.postgres) { database in
            let stores = try await withThrowingTaskGroup(of: (any EventStore).self) { group in
                for _ in 0..<3 { group.addTask { try await database.open() } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(stores.count == 3)
            _ = try await stores[0].insert([StoreContractTests.event("m")])
            #expect(try await stores[2].eventDetail(id: "m") != nil)
            for store in stores { try await store.close() }
        }
    }

    @Test("storage.max_connections bounds the instance's pool: calls beyond it wait for a connection rather than open one")
    func poolBound() async throws {
        try await withTestDatabase(.postgres) { database in
            let store = try #require(try await database.open(maximumConnections: 3) as? PostgresStore)
            let name = try #require(URLComponents(string: database.url)?.path.dropFirst().description)
            // The sleeps answer 0; the watcher, the most connections it saw.
            let seen = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<6 {
                    group.addTask {
                        _ = try await store.run { client, logger in try await client.query("SELECT pg_sleep(1)", logger: logger) }
                        return 0
                    }
                }
                group.addTask {
                    // Only the pool's: the store's first connection (migrations, registration) was closed before it
                    // opened, and its server process may still be leaving pg_stat_activity.
                    var peak = 0
                    for _ in 0..<30 {
                        peak = max(peak, try await TestDatabase.connections(to: name, running: "pg_sleep"))
                        try await Task.sleep(for: .milliseconds(100))
                    }
                    return peak
                }
                return try await group.reduce(0, max)
            }
            // Six sleeps of a second on three connections take two rounds; the pool opened what it was allowed to. (With
            // sleeps of 0.3 s, a fresh CI run saw at most two at once: on a loaded machine the pool's third connection
            // opened as the first round ended, and the watcher looks every 100 ms.)
            #expect(seen == 3, "\(seen) connections to the database at most")
            try await store.close()
        }
    }

    @Test("two instances claiming the same destination at once never claim a delivery twice")
    func skipLocked() async throws {
        try await withTestDatabase(.postgres) { database in
            let (a, b) = (try await database.open(), try await database.open())
            let count = 300
            _ = try await a.insert((0..<count).map { StoreContractTests.event("s\($0)", at: StoreContractTests.t0 + Int64($0)) })
            let claimedBy = Collected()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for store in [a, b] {
                    group.addTask {
                        while true {
                            let now = Clock.milliseconds()
                            let claimed = try await store.claimDue(
                                destination: "out", fifo: false, now: now, limit: 7, leaseUntil: now + 60_000)
                            if claimed.isEmpty { return }
                            for delivery in claimed { claimedBy.add(delivery.id) }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let claims = claimedBy.all
            #expect(claims.count == count, "every delivery claimed, and none twice")
            #expect(Set(claims).count == count)
            try await a.close()
            try await b.close()
        }
    }

    @Test("a FIFO head claimed by one instance holds the line for every instance")
    func fifoAcrossInstances() async throws {
        try await withTestDatabase(.postgres) { database in
            let (a, b) = (try await database.open(), try await database.open())
            for index in 0..<3 { _ = try await a.insert([StoreContractTests.event("q\(index)", at: StoreContractTests.t0 + Int64(index))]) }
            let now = Clock.milliseconds()
            async let fromA = a.claimDue(destination: "out", fifo: true, now: now, limit: 1, leaseUntil: now + 60_000)
            async let fromB = b.claimDue(destination: "out", fifo: true, now: now, limit: 1, leaseUntil: now + 60_000)
            let both = try await fromA + fromB
            #expect(both.map(\.id) == ["q0-out"], "exactly one instance has the head")
            #expect(try await b.claimDue(destination: "out", fifo: true, now: now, limit: 1, leaseUntil: now + 60_000).isEmpty)
            try await a.record([StoreContractTests.outcome("q0-out", .delivered)])
            #expect(
                try await b.claimDue(destination: "out", fifo: true, now: now, limit: 1, leaseUntil: now + 60_000).map(\.id) == ["q1-out"])
            try await a.close()
            try await b.close()
        }
    }

    @Test("the claims of an instance that stopped being seen go back to pending; a live instance keeps its own")
    func staleInstance() async throws {
        try await withTestDatabase(.postgres) { database in
            // Instance a records that it is alive every 20 minutes: no heartbeat of its own undoes the staleness below.
            let (a, b) = (try await database.open(instanceTimeout: .seconds(3600)), try await database.open())
            _ = try await a.insert([StoreContractTests.event("d1"), StoreContractTests.event("d2")])
            let now = Clock.milliseconds()
            #expect(
                try await a.claimDue(destination: "out", fifo: false, now: now, limit: 1, leaseUntil: now + 600_000).map(\.id) == ["d1-out"]
            )
            #expect(
                try await b.claimDue(destination: "out", fifo: false, now: now, limit: 1, leaseUntil: now + 600_000).map(\.id) == ["d2-out"]
            )
            #expect(try await b.releaseExpiredLeases(now: Clock.milliseconds()) == 0, "both instances are alive")
            // Instance a's heartbeat stops (as when it is killed): its last sign of life is now older than allowed.
            let idA = try #require((a as? PostgresStore)?.instanceID)
            try await TestDatabase.administerOn(database, "UPDATE instances SET seen_at = 0 WHERE id = '\(idA)'")
            #expect(try await b.releaseExpiredLeases(now: Clock.milliseconds()) == 1)
            let detail = try #require(try await b.eventDetail(id: "d1"))
            #expect(detail.deliveries.first?.status == .pending)
            #expect(try await b.eventDetail(id: "d2")?.deliveries.first?.status == .inFlight)
            try await a.close()
            try await b.close()
        }
    }

    @Test("work committed and destinations suspended by one instance are announced to the others (LISTEN/NOTIFY)")
    func notifications() async throws {
        try await withTestDatabase(.postgres) { database in
            let (a, b) = (try await database.open(), try await database.open())
            let work = Atomic<Int>(0)
            let states = Atomic<Int>(0)
            b.onChange { change in
                switch change {
                case .newWork: work.add(1, ordering: .sequentiallyConsistent)
                case .destinationStates: states.add(1, ordering: .sequentiallyConsistent)
                }
            }
            // The listener reports both once when it starts listening.
            try await waitUntil("the listener to start", timeout: .seconds(10)) { states.load(ordering: .sequentiallyConsistent) >= 1 }
            let (workBefore, statesBefore) = (work.load(ordering: .sequentiallyConsistent), states.load(ordering: .sequentiallyConsistent))
            _ = try await a.insert([StoreContractTests.event("n1")])
            try await waitUntil("a work notification", timeout: .seconds(10)) { work.load(ordering: .sequentiallyConsistent) > workBefore }
            #expect(states.load(ordering: .sequentiallyConsistent) == statesBefore, "an insert announced a destination change")

            // An attempt that will be retried is work again, for any instance; a delivered one is not.
            let now = Clock.milliseconds()
            _ = try await a.insert([StoreContractTests.event("n2")])
            try await waitUntil("the second insert's notification", timeout: .seconds(10)) {
                work.load(ordering: .sequentiallyConsistent) > workBefore + 1
            }
            let claimed = try await a.claimDue(destination: "out", fifo: false, now: now + 1, limit: 2, leaseUntil: now + 60_000)
            #expect(claimed.count == 2)
            let beforeRetry = work.load(ordering: .sequentiallyConsistent)
            try await a.record([StoreContractTests.outcome("n1-out", .retrying, next: now + 1000, error: "HTTP 503")])
            try await waitUntil("a retry's notification", timeout: .seconds(10)) {
                work.load(ordering: .sequentiallyConsistent) > beforeRetry
            }

            try await a.setSuspended(true, destination: "out")
            try await waitUntil("a destination notification", timeout: .seconds(10)) {
                states.load(ordering: .sequentiallyConsistent) > statesBefore
            }
            #expect(try await b.suspendedDestinations() == ["out"])
            try await a.close()
            try await b.close()
        }
    }

    @Test("a destination paused through one instance's admin API is held by every instance until resumed through another")
    func sharedPause() async throws {
        try await withTestDatabase(.postgres) { database in
            let sink = RecordingSink()
            try await sink.start()
            let yaml = oneDestinationConfig(storageURL: database.url, sink: sink)
            let (a, b) = (try await TestServer.start(yaml: yaml), try await TestServer.start(yaml: yaml))
            func state(_ server: TestServer) async throws -> String? {
                let listing = try await send(.GET, server.adminURL + "/admin/destinations").json
                return listing?["destinations"]?.arrayValue?.first { $0["name"] == "out" }?["state"]?.stringValue
            }
            #expect(try await adminPost(a.adminURL + "/admin/destinations/out/pause").status == 200)
            // Sooner than B's maintenance pass (5 s): the notification told it.
            try await waitUntil("B to hold the destination", timeout: .seconds(4)) { try await state(b) == "suspended" }
            let response = try await b.post("app", json: #"{"while":"paused"}"#)
            let id = try #require(response.json?["id"]?.stringValue)
            #expect(try await adminPost(b.adminURL + "/admin/destinations/out/resume").status == 200)
            try await waitUntil("A to send again", timeout: .seconds(4)) { try await state(a) == "healthy" }
            try await a.waitForDeliveries(of: id)
            try await a.stop()
            try await b.stop()
            try await sink.stop()
        }
    }

    @Test("a transaction that outlives its deadline is rolled back, not committed late: an insert answered 'unavailable' stores nothing")
    func lateTransactionRolledBack() async throws {
        try await withTestDatabase(.postgres) { database in
            let store = try await PostgresStore(url: database.url, logger: testLogger, maximumConnections: 2, operationTimeout: .seconds(1))
            runServices(of: store)
            // A connection of the test's own (no store, no deadline) holds a lock that adding deliveries waits for, until
            // the insert has been given up: the insert's statements then finish after its deadline.
            let locker = try await TestDatabase.connect(database: try PostgresURL(database.url).database, id: 7)
            try await locker.query("BEGIN", logger: testLogger)
            try await locker.query("LOCK TABLE deliveries IN EXCLUSIVE MODE", logger: testLogger)
            let clock = ContinuousClock()
            let start = clock.now
            await #expect(throws: StoreError.self) { try await store.insert([StoreContractTests.event("late")]) }
            #expect(clock.now - start < .seconds(4), "the insert was not given up at its deadline")
            try await locker.query("COMMIT", logger: testLogger)
            func count(_ sql: String) async throws -> Int {
                let rows = try await locker.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM " + sql), logger: testLogger)
                for try await count in rows.decode(Int.self) { return count }
                return -1
            }
            // The given-up transaction's statements run once the lock is gone, and it ends: it must roll back rather than
            // commit.
            try await waitUntil("the given-up transaction to end", timeout: .seconds(20)) {
                try await count("pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'") == 0
            }
            #expect(try await count("events") == 0, "a late commit stored the event")
            #expect(try await count("deliveries") == 0)
            try await locker.close()
            try await store.close()
        }
    }

    @Test("a server on PostgreSQL ingests and delivers end to end")
    func serverEndToEnd() async throws {
        try await withTestDatabase(.postgres) { database in
            let sink = RecordingSink()
            try await sink.start()
            let yaml = oneDestinationConfig(storageURL: database.url, sink: sink)
            let server = try await TestServer.start(yaml: yaml)
            let response = try await server.post("app", json: #"{"hello":"postgres"}"#)
            #expect(response.status == 202)
            let id = try #require(response.json?["id"]?.stringValue)
            try await server.waitForDeliveries(of: id)
            #expect(sink.requests("/out").count == 1)
            let body = sink.requests("/out").first.map { String(decoding: $0.body, as: UTF8.self) } ?? ""
            #expect(body.contains("postgres"))
            try await server.stop()
            try await sink.stop()
        }
    }
}

extension TestDatabase {
    /// Runs one statement on this test's own database.
    static func administerOn(_ database: TestDatabase, _ sql: String) async throws {
        let store = try #require(try await database.open() as? PostgresStore)
        _ = try await store.run { client, logger in try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger) }
        try await store.close()
    }

    /// The number a `SELECT count(*) …` on this test's own database answers.
    static func count(_ database: TestDatabase, _ sql: String) async throws -> Int {
        let store = try #require(try await database.open() as? PostgresStore)
        let count = try await store.run { client, logger in
            for try await count in try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).decode(Int.self) { return count }
            return 0
        }
        try await store.close()
        return count
    }
}
