import Foundation
import GRDB
import PluginKit
import Testing

@testable import Host

@Suite("Storage failure")
struct StorageFailureTests {
    @Test("when the database stays locked past the deadline, ingest answers 503 and stores nothing; it recovers by itself")
    func lockedDatabase() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let yaml =
            testServerSection() + """
                destinations:
                  out: { formatter: generic, url: "\(sink.url)/out" }
                sources:
                  app: { destinations: [out] }
                """
        let server = try await TestServer.start(yaml: yaml)
        let path = server.directory + "/data/hookproxy.sqlite"

        // Another connection takes the write lock and holds it longer than the store's busy timeout (5 s).
        var configuration = GRDB.Configuration()
        configuration.allowsUnsafeTransactions = true
        // The server may be in a short write of its own (a claim) at this moment: wait for it.
        configuration.busyMode = .timeout(5)
        let locker = try DatabaseQueue(path: path, configuration: configuration)
        try await locker.writeWithoutTransaction { db in try db.execute(sql: "BEGIN IMMEDIATE") }

        let refused = try await server.post("app", json: #"{"n":"refused"}"#)
        #expect(refused.status == 503)
        #expect(refused.json?["error"] == "storage_unavailable")

        try await locker.writeWithoutTransaction { db in try db.execute(sql: "ROLLBACK") }
        try locker.close()

        let accepted = try await server.post("app", json: #"{"n":"accepted"}"#)
        #expect(accepted.status == 202)
        let id = try #require(accepted.json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id)
        #expect(sink.requests("/out").map(\.text) == [#"{"n":"accepted"}"#], "the refused event must not be stored or sent")
        try await server.stop()
        try await sink.stop()
    }
}

@Suite("Disk full")
struct DiskFullTests {
    @Test("a claim commits without an fsync, and every durable write after it syncs again, whatever happened in between")
    func durableAfterClaim() async throws {
        let directory = TestPaths.temporaryDirectory("synchronous")
        let store = try SQLiteStore(path: directory + "/store.sqlite")
        // 1 is NORMAL, 2 is FULL: the writer connection's setting inside each kind of transaction.
        let claimSetting = try await store.writeWithoutSync { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
        #expect(claimSetting == 1)
        let durableSetting = try await store.write { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
        #expect(durableSetting == 2, "a durable write ran with the claim's synchronous = NORMAL")
        // A claim whose transaction fails leaves nothing behind either.
        await #expect(throws: StoreError.self) {
            try await store.writeWithoutSync { db in try db.execute(sql: "INSERT INTO no_such_table VALUES (1)") }
        }
        #expect(try await store.write { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") } == 2)
        // Reads fail with the store's one error type too.
        await #expect(throws: StoreError.self) { try await store.read { db in try Int.fetchOne(db, sql: "SELECT nope FROM nowhere") } }
        try await store.close()
    }

    @Test("when the database is full, ingest answers 503; once space is freed it accepts again and no acknowledged event is lost")
    func diskFull() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let yaml =
            testServerSection().replacingOccurrences(
                of: "  url: \"sqlite:data/hookproxy.sqlite\"", with: "  url: \"sqlite:data/hookproxy.sqlite\"\n  max_size: 320KB") + """
                destinations:
                  out: { formatter: generic, url: "\(sink.url)/out" }
                sources:
                  app: { destinations: [out] }
                """
        let server = try await TestServer.start(yaml: yaml)
        let padding = String(repeating: "x", count: 6000)
        var acknowledged: [String: String] = [:]
        func post(_ index: Int) async throws -> Int {
            let body = #"{"n":\#(index),"pad":"\#(padding)"}"#
            let response = try await server.post("app", json: body)
            if response.status == 202, let id = response.json?["id"]?.stringValue { acknowledged[id] = body }
            return response.status
        }
        // Old data that retention may later purge.
        for index in 0..<5 { #expect(try await post(index) == 202) }
        for id in acknowledged.keys { try await server.waitForDeliveries(of: id) }

        var index = 5
        var refused: TestResponse?
        while index < 400 {
            let body = #"{"n":\#(index),"pad":"\#(padding)"}"#
            let response = try await server.post("app", json: body)
            if response.status == 202, let id = response.json?["id"]?.stringValue {
                acknowledged[id] = body
            } else {
                refused = response
                break
            }
            index += 1
        }
        let full = try #require(refused, "the database never filled up")
        #expect(full.status == 503)
        #expect(full.json?["error"] == "storage_unavailable")

        // Free space: purge what has been delivered, as retention does.
        try await waitUntil("space to be freed") { try await server.store.purge(receivedBefore: Clock.milliseconds(), limit: 1000) > 0 }
        try await waitUntil("ingest to accept again") { try await post(1000) == 202 }

        try await waitUntil("every acknowledged event at the sink", timeout: .seconds(30)) {
            Set(sink.requests("/out").map(\.text)).isSuperset(of: Set(acknowledged.values))
        }
        try await server.stop()
        try await sink.stop()
    }

    @Test("outcomes that cannot be committed (the file is full) are tried again until they are, not left to their leases")
    func outcomesRetriedUntilRecorded() async throws {
        let sink = RecordingSink()
        try await sink.start()
        // Every answer takes a second, so the file fills up while the first deliveries wait for theirs, and carries 4 KB
        // that the attempt log keeps: recording it needs new pages.
        let answer = RecordingSink.Planned(status: 200, body: String(repeating: "y", count: 4000), delay: .seconds(1))
        sink.plan("/out", responses: Array(repeating: answer, count: 400))
        let yaml =
            testServerSection().replacingOccurrences(
                of: "  url: \"sqlite:data/hookproxy.sqlite\"", with: "  url: \"sqlite:data/hookproxy.sqlite\"\n  max_size: 320KB") + """
                destinations:
                  out: { formatter: generic, url: "\(sink.url)/out", max_concurrency: 4 }
                sources:
                  app: { destinations: [out] }
                """
        let server = try await TestServer.start(yaml: yaml)
        let padding = String(repeating: "x", count: 6000)
        var acknowledged: [String] = []
        for index in 0..<400 {
            let response = try await server.post("app", json: #"{"n":\#(index),"pad":"\#(padding)"}"#)
            guard response.status == 202, let id = response.json?["id"]?.stringValue else { break }
            acknowledged.append(id)
        }
        #expect(acknowledged.count < 400, "the database never filled up")
        // The answers arrive while the file is full: the engine counts each answered attempt (its metric) but cannot
        // commit its outcome, so the answered outnumber the recorded.
        let store = try #require(server.store as? SQLiteStore)
        try await waitUntil("answers whose outcomes wait for space") {
            let metrics = try PrometheusText(try await send(.GET, server.adminURL + "/metrics"))
            let answered = metrics.value("hookproxy_delivery_attempts_total", ["destination": "out", "outcome": "delivered"]) ?? 0
            let recorded = try await store.read { db in
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM deliveries WHERE status = 'delivered'") ?? 0
            }
            return answered > Double(recorded)
        }
        let notRecorded = try await store.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM deliveries WHERE status = 'in_flight'") ?? 0
        }
        #expect(notRecorded > 0, "no outcome waited for space")
        // Space again (as if a disk were cleaned up): every outcome is recorded within seconds, not after the 5-minute
        // lease.
        try await store.pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA max_page_count = 1000000") }
        try await waitUntil("every acknowledged event's delivery recorded as delivered", timeout: .seconds(60)) {
            for id in acknowledged {
                guard let detail = try await server.detail(id), detail.deliveries.allSatisfy({ $0.status == .delivered }) else {
                    return false
                }
            }
            return true
        }
        try await server.stop()
        try await sink.stop()
    }
}
