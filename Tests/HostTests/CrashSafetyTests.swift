import Foundation
import PluginKit
import Testing

@testable import Host

/// The real executable, killed and restarted.
@Suite("Crash safety")
struct CrashSafetyTests {
    static func config(directory: String, sink: String, ingest: Int, admin: Int, extra: String = "") -> String {
        """
        server:
          listen: "127.0.0.1:\(ingest)"
          admin_listen: "127.0.0.1:\(admin)"
          shutdown_grace: 2s
        storage:
          url: "sqlite:data/hookproxy.sqlite"
        defaults:
          retry: { schedule: [200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms], jitter: 0 }
        destinations:
          out: { formatter: generic, url: "\(sink)/out", options: { mode: envelope } }
        \(extra)
        sources:
          app: { destinations: [out] }
        """
    }

    @Test("SIGKILL at random instants under concurrent ingest: every acknowledged event reaches the sink, duplicates share a webhook-id")
    func killUnderLoad() async throws {
        let sink = RecordingSink()
        try await sink.start()
        sink.answerByDefault(.init(status: 200, delay: .milliseconds(30)))
        let directory = TestPaths.temporaryDirectory("kill")
        let (ingest, admin) = (try unusedPort(), try unusedPort())
        let file = directory + "/sources.yaml"
        try Self.config(directory: directory, sink: sink.url, ingest: ingest, admin: admin).write(
            toFile: file, atomically: true, encoding: .utf8)
        let acknowledged = Collected()
        let health = "http://127.0.0.1:\(admin)/healthz"

        for round in 0..<4 {
            let child = try await ChildServer(config: file, healthURL: health, log: directory + "/serve.log")
            let clients = Task {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for client in 0..<4 {
                        group.addTask {
                            var sequence = 0
                            while !Task.isCancelled {
                                sequence += 1
                                let body = Array(#"{"round":\#(round),"client":\#(client),"n":\#(sequence)}"#.utf8)
                                guard
                                    let response = try? await send(
                                        .POST, "http://127.0.0.1:\(ingest)/webhooks/app", body: body,
                                        headers: [("Content-Type", "application/json")])
                                else { continue }
                                if response.status == 202, let id = response.json?["id"]?.stringValue { acknowledged.add(id) }
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
            // A random instant, once this round has acknowledged a few events (a starved machine is slow to start).
            let before = acknowledged.all.count
            try await Task.sleep(for: .milliseconds(Int.random(in: 300...1200)))
            try await waitUntil("round \(round) to be under load", timeout: .seconds(30)) { acknowledged.all.count >= before + 5 }
            try await child.kill()
            clients.cancel()
            _ = try? await clients.value
        }
        let ids = acknowledged.all
        // A floor that shows the rounds did ingest under load; on two cores shared with the whole suite (and the benchmark
        // smoke run) four debug-build rounds of 0.3–1.2 s acknowledge from about 40 events upwards.
        #expect(ids.count > 20, "too little load: \(ids.count) acknowledged")

        let final = try await ChildServer(config: file, healthURL: health, log: directory + "/serve.log")
        try await waitUntil("every acknowledged event at the sink", timeout: .seconds(60)) {
            let received = Set(sink.requests("/out").compactMap { $0.json?["id"]?.stringValue })
            return received.isSuperset(of: ids)
        }
        var webhookIDs: [String: Set<String>] = [:]
        for request in sink.requests("/out") {
            if let id = request.json?["id"]?.stringValue { webhookIDs[id, default: []].insert(request.header("webhook-id") ?? "") }
        }
        #expect(webhookIDs.values.allSatisfy { $0.count == 1 }, "a duplicate carried another webhook-id")
        #expect(try await final.terminate() == 0)
        try await sink.stop()
    }

    @Test("SIGTERM stops ingest, lets short sends finish, releases long ones to pending without an attempt, and exits 0")
    func gracefulShutdown() async throws {
        let sink = RecordingSink()
        try await sink.start()
        // The sink runs in this (loaded) test process: the short send gets far more than its 500 ms before the 10 s grace.
        // The slow send outlasts its grace and cannot time out first (its timeout is longer than its answer takes).
        sink.plan("/slow", responses: [.init(status: 200, delay: .seconds(40))])
        sink.plan("/out", responses: [.init(status: 200, delay: .milliseconds(500))])
        let directory = TestPaths.temporaryDirectory("sigterm")
        let (ingest, admin) = (try unusedPort(), try unusedPort())
        let file = directory + "/sources.yaml"
        let yaml = Self.config(directory: directory, sink: sink.url, ingest: ingest, admin: admin)
            .replacingOccurrences(of: "  app: { destinations: [out] }", with: "  app: { destinations: [out, slow] }")
            .replacingOccurrences(
                of: "\nsources:", with: "  slow: { formatter: generic, url: \"\(sink.url)/slow\", timeout: 120s }\nsources:"
            )
            .replacingOccurrences(of: "shutdown_grace: 2s", with: "shutdown_grace: 10s")
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        let child = try await ChildServer(config: file, healthURL: "http://127.0.0.1:\(admin)/healthz", log: directory + "/serve.log")
        let response = try await send(
            .POST, "http://127.0.0.1:\(ingest)/webhooks/app", body: Array("{}".utf8), headers: [("Content-Type", "application/json")])
        let id = try #require(response.json?["id"]?.stringValue)
        try await waitUntil("both sends in flight") { sink.requests("/slow").count == 1 && sink.requests("/out").count == 1 }
        let started = ContinuousClock.now
        #expect(try await child.terminate() == 0)
        #expect(ContinuousClock.now - started < .seconds(18), "shutdown waited for the 40 s send; log: \(directory)/serve.log")
        let refused = try? await send(.POST, "http://127.0.0.1:\(ingest)/webhooks/app", body: Array("{}".utf8))
        #expect(refused == nil, "ingest still answered after shutdown")

        let store = try SQLiteStore(path: directory + "/data/hookproxy.sqlite")
        let detail = try #require(try await store.eventDetail(id: id))
        let byDestination = Dictionary(uniqueKeysWithValues: detail.deliveries.map { ($0.destination, $0) })
        #expect(byDestination["out"]?.status == .delivered)
        #expect(byDestination["slow"]?.status == .pending)
        #expect(byDestination["slow"]?.attempts == 0)
        #expect(byDestination["slow"]?.history.isEmpty == true)
        try await store.close()
        try await sink.stop()
    }
}
