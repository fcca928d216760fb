import Foundation
import PluginKit
import Testing

@testable import Host

/// Several `hookproxy serve` processes on one PostgreSQL database, one of them killed; and the database itself crashed
/// and restarted under a running server.
@Suite("Scale-out on PostgreSQL", .enabled(if: TestBackend.postgresEnabled))
struct ScaleOutTests {
    static func config(database: String, sink: String, ingest: Int, admin: Int) -> String {
        """
        server:
          listen: "127.0.0.1:\(ingest)"
          admin_listen: "127.0.0.1:\(admin)"
          shutdown_grace: 2s
        storage:
          url: "\(database)"
          instance_timeout: 3s
          # Three instances and the CLI share the test server's connections with the rest of the suite.
          max_connections: 8
        defaults:
          retry: { schedule: [200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms], jitter: 0 }
        destinations:
          out: { formatter: generic, url: "\(sink)/out", max_concurrency: 4, options: { mode: envelope } }
          line: { formatter: generic, url: "\(sink)/line", ordering: fifo, options: { mode: envelope } }
        sources:
          app: { destinations: [out, line] }
        """
    }

    @Test("three instances under concurrent ingest, one SIGKILLed: every acknowledged event reaches the sink, FIFO in order")
    func instanceKilledUnderLoad() async throws {
        try await withTestDatabase(.postgres) { database in
            let sink = RecordingSink()
            try await sink.start()
            // `out` answers slowly, so that a backlog forms and every instance holds deliveries claimed ahead, not yet
            // sent: the killed instance's must come back to the others. The FIFO line answers fast enough to drain.
            sink.answerByDefault(.init(status: 200, delay: .milliseconds(20)))
            sink.plan("/out", responses: Array(repeating: .init(status: 200, delay: .milliseconds(100)), count: 20_000))
            let directory = TestPaths.temporaryDirectory("scale-out")
            var instances: [(ingest: Int, admin: Int, child: ChildServer)] = []
            for number in 0..<3 {
                let (ingest, admin) = (try unusedPort(), try unusedPort())
                let file = directory + "/sources-\(number).yaml"
                try Self.config(database: database.url, sink: sink.url, ingest: ingest, admin: admin).write(
                    toFile: file, atomically: true, encoding: .utf8)
                let child = try await ChildServer(
                    config: file, healthURL: "http://127.0.0.1:\(admin)/healthz", log: directory + "/serve-\(number).log")
                instances.append((ingest, admin, child))
            }
            let ports = instances.map(\.ingest)

            // Each client sends its next event once the last one was answered and 20 ms have passed, spreading them over
            // the instances as a load balancer would; an instance that is gone refuses the connection and the client moves
            // on. The pace bounds how many events the slow `out` must drain at the end however fast ingest is (unpaced, a
            // faster ingest acknowledged more than two survivors could send to `out` within the wait below).
            let acknowledged = Collected()
            let clients = Task {
                await withTaskGroup(of: Void.self) { group in
                    for client in 0..<6 {
                        group.addTask {
                            var sequence = 0
                            while !Task.isCancelled {
                                sequence += 1
                                let port = ports[(client + sequence) % ports.count]
                                let body = Array(#"{"client":\#(client),"n":\#(sequence)}"#.utf8)
                                guard
                                    let response = try? await send(
                                        .POST, "http://127.0.0.1:\(port)/webhooks/app", body: body,
                                        headers: [("Content-Type", "application/json")]),
                                    response.status == 202, let id = response.json?["id"]?.stringValue
                                else { continue }
                                acknowledged.add(id)
                                try? await Task.sleep(for: .milliseconds(20))
                            }
                        }
                    }
                }
            }
            try await waitUntil("load on every instance", timeout: .seconds(30)) { acknowledged.all.count >= 60 }
            let killed = instances[0].child.process.processIdentifier
            let claimsOfKilled =
                "SELECT count(*) FROM deliveries d JOIN instances i ON i.id = d.claimed_by WHERE d.status = 'in_flight' AND i.pid = \(killed)"
            // Killed while it holds claims (the slow /out keeps a backlog): their recovery is what this test is about.
            // Stopped first (SIGSTOP), so that the claims counted are the ones it holds when killed; on a loaded machine
            // they could otherwise finish between the count and the kill.
            var held = 0
            try await waitUntil("the first instance to hold claims", timeout: .seconds(30)) {
                kill(killed, SIGSTOP)
                held = try await TestDatabase.count(database, claimsOfKilled)
                if held == 0 { kill(killed, SIGCONT) }
                return held > 0
            }
            try await instances[0].child.kill()
            let atKill = acknowledged.all.count
            #expect(held > 0, "the killed instance held no deliveries: the test did not exercise their recovery")
            try await waitUntil("load on the survivors", timeout: .seconds(30)) { acknowledged.all.count >= atKill + 60 }
            clients.cancel()
            await clients.value
            let ids = Set(acknowledged.all)

            try await waitUntil("every acknowledged event at both destinations", timeout: .seconds(90)) {
                let out = Set(sink.requests("/out").compactMap { $0.json?["id"]?.stringValue })
                let line = Set(sink.requests("/line").compactMap { $0.json?["id"]?.stringValue })
                return out.isSuperset(of: ids) && line.isSuperset(of: ids)
            }
            // The killed instance's claims were found by a survivor (its heartbeat went stale), not by a lease running out.
            let logs = (1..<3).map { (try? String(contentsOfFile: directory + "/serve-\($0).log", encoding: .utf8)) ?? "" }
            #expect(logs.contains { $0.contains("released expired delivery leases") }, "no survivor released the dead instance's claims")

            // FIFO: each client's events reach `line` in the order the client sent them (a delivery sent again after
            // the kill may repeat, but nothing overtakes it). A client sends its next event only after the last one's 202.
            var lastSeen: [Int: Int] = [:]
            var overtaken: [String] = []
            for request in sink.requests("/line") {
                guard let data = request.json?["payload"], let client = data["client"]?.intValue, let n = data["n"]?.intValue else {
                    continue
                }
                if let last = lastSeen[client], n < last { overtaken.append("client \(client): \(n) after \(last)") }
                lastSeen[client] = max(lastSeen[client] ?? 0, n)
            }
            #expect(overtaken.isEmpty, "out of order on the FIFO destination: \(overtaken.prefix(5))")

            for instance in instances.dropFirst() { #expect(try await instance.child.terminate() == 0) }
            try await sink.stop()
        }
    }

    @Test("a database crash: ingest answers 503 while it is down, recovers by itself, and no acknowledged event is lost")
    func databaseRestart() async throws {
        try await PrivateCluster.with { cluster in try await crashAndRestart(cluster) }
    }

    private func crashAndRestart(_ cluster: PrivateCluster) async throws {
        let sink = RecordingSink()
        try await sink.start()
        let yaml = oneDestinationConfig(storageURL: cluster.url, sink: sink)
        let server = try await TestServer.start(yaml: yaml)
        // Suspended, so the events wait in the database through the crash.
        #expect(try await adminPost(server.adminURL + "/admin/destinations/out/pause").status == 200)
        var ids: [String] = []
        for n in 0..<10 {
            let response = try await server.post("app", json: #"{"before":\#(n)}"#)
            #expect(response.status == 202)
            ids += [response.json?["id"]?.stringValue].compactMap { $0 }
        }

        try await cluster.crash()
        let started = ContinuousClock.now
        let refused = try await server.post("app", json: #"{"during":1}"#)
        #expect(refused.status == 503)
        #expect(refused.json?["error"] == "storage_unavailable")
        #expect(ContinuousClock.now - started < .seconds(8), "ingest took \(ContinuousClock.now - started) to answer")
        #expect(try await send(.GET, server.adminURL + "/readyz").status == 503)

        try await cluster.resume()
        var recovered: TestResponse?
        try await waitUntil("ingest to recover without a restart", timeout: .seconds(30)) {
            let response = try await server.post("app", json: #"{"after":1}"#)
            if response.status == 202 { recovered = response }
            return response.status == 202
        }
        ids += [recovered?.json?["id"]?.stringValue].compactMap { $0 }
        #expect(try await send(.GET, server.adminURL + "/readyz").status == 200)
        // The suspension was recorded in the database too: it held through the crash.
        #expect(sink.requests("/out").isEmpty)
        #expect(try await adminPost(server.adminURL + "/admin/destinations/out/resume").status == 200)
        // Loose for a loaded two-core machine: connections the crash cut are found and replaced along the way.
        try await waitUntil("every acknowledged event at the sink", timeout: .seconds(90)) {
            Set(sink.requests("/out").compactMap { $0.json?["id"]?.stringValue }).isSuperset(of: ids)
        }
        #expect(ids.count == 11)
        try await server.stop()
        try await sink.stop()
    }
}
