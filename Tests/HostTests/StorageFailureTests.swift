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
