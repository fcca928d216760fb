import Foundation
import PluginKit
import Testing

@testable import Host

/// The real server, real HTTP on loopback, a real recording sink and a real SQLite file.
@Suite("End to end")
struct EndToEndTests {
    static func fanOutConfig(sink: String) -> String {
        testServerSection() + """
            destinations:
              chat-discord:
                formatter: discord
                url: "\(sink)/discord"
                options: { title: "{{fields.repo}}: {{fields.action}}", username: "ci" }
              chat-slack:
                formatter: slack
                url: "\(sink)/slack"
                options: { title: "{{fields.repo}}" }
              archive:
                formatter: generic
                url: "\(sink)/generic"
                headers: { X-Env: test }
              flaky:
                formatter: generic
                url: "\(sink)/flaky"
              gone:
                formatter: generic
                url: "\(sink)/gone"
            sources:
              github:
                mapping:
                  repo: { path: "$.repository.full_name", required: true }
                  action: "$.action"
                destinations: [chat-discord, chat-slack, archive]
              flaky:
                destinations: [flaky]
              gone:
                destinations: [gone]
              locked:
                destinations: [archive]
                replay: false
            """
    }

    @Test("a webhook fans out to Discord, Slack and generic destinations, each receiving its own format")
    func fanOut() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await TestServer.start(yaml: Self.fanOutConfig(sink: sink.url))
        let payload = #"{"repository":{"full_name":"acme/api"},"action":"opened","note":"ünïcødé 😀"}"#
        let response = try await server.post("github", json: payload, headers: [("X-GitHub-Event", "pull_request")])
        #expect(response.status == 202)
        #expect(response.header("X-Request-Id")?.isEmpty == false)
        let id = try #require(response.json?["id"]?.stringValue)
        #expect(response.json?["status"] == "accepted")

        try await server.waitForDeliveries(of: id)
        let discord = try #require(sink.requests("/discord").first)
        #expect(discord.json?["embeds"]?.arrayValue?.first?["title"] == "acme/api: opened")
        #expect(discord.json?["allowed_mentions"] == ["parse": []])
        #expect(discord.header("Content-Type") == "application/json")
        let slack = try #require(sink.requests("/slack").first)
        #expect(slack.json?["text"] == "acme/api")
        #expect(slack.json?["blocks"]?.arrayValue?.isEmpty == false)
        let generic = try #require(sink.requests("/generic").first)
        #expect(generic.body == Array(payload.utf8))
        #expect(generic.header("X-Env") == "test")

        let detail = try #require(try await server.detail(id))
        for delivery in detail.deliveries {
            let received = try #require(sink.requests().first { $0.header("webhook-id") == delivery.id })
            #expect(received.header("User-Agent") == "hookproxy/\(HookproxyVersion.current)")
            #expect(Int(received.header("webhook-timestamp") ?? "") != nil)
            #expect(delivery.history.count == 1 && delivery.history[0].httpStatus == 200)
            #expect(delivery.history[0].responseBody == Array("ok".utf8))
        }
        try await server.stop()
        try await sink.stop()
    }

    @Test("a 500 from the destination is retried on the schedule and later succeeds; attempts are logged")
    func retriesUntilSuccess() async throws {
        let sink = RecordingSink()
        try await sink.start()
        sink.plan("/flaky", statuses: [500, 503])
        let server = try await TestServer.start(yaml: Self.fanOutConfig(sink: sink.url))
        let id = try #require(try await server.post("flaky", json: #"{"n":1}"#).json?["id"]?.stringValue)
        // Three attempts 200 ms apart; the wait is long because the whole suite shares two cores with it, and this test
        // checks the schedule and the log, not the speed.
        try await server.waitForDeliveries(of: id, timeout: .seconds(60))
        let delivery = try #require(try await server.detail(id)?.deliveries.first)
        #expect(delivery.attempts == 3)
        #expect(delivery.history.map(\.httpStatus) == [500, 503, 200])
        #expect(delivery.history[0].responseBody == Array("failure 500".utf8))
        #expect(delivery.history[1].startedAt - delivery.history[0].startedAt >= 200)
        let ids = Set(sink.requests("/flaky").map { $0.header("webhook-id") })
        #expect(ids == [delivery.id], "webhook-id must be stable across retries")
        try await server.stop()
        try await sink.stop()
    }

    @Test("a 4xx other than 408/409/425/429 is permanent: dead after one attempt; exhausting the schedule is dead too")
    func permanentAndExhausted() async throws {
        let sink = RecordingSink()
        try await sink.start()
        sink.plan("/gone", statuses: [404])
        sink.plan("/flaky", statuses: [500, 500, 500, 500])
        let server = try await TestServer.start(yaml: Self.fanOutConfig(sink: sink.url))
        let gone = try #require(try await server.post("gone", json: "{}").json?["id"]?.stringValue)
        let flaky = try #require(try await server.post("flaky", json: "{}").json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: gone, toBe: [.dead])
        try await server.waitForDeliveries(of: flaky, toBe: [.dead])
        let goneDelivery = try #require(try await server.detail(gone)?.deliveries.first)
        #expect(goneDelivery.attempts == 1)
        #expect(goneDelivery.lastError == "destination answered HTTP 404")
        let flakyDelivery = try #require(try await server.detail(flaky)?.deliveries.first)
        #expect(flakyDelivery.attempts == 4)
        #expect(flakyDelivery.lastError == "destination answered HTTP 500 (gave up after 4 attempts)")
        try await server.stop()
        try await sink.stop()
    }

    @Test("replay: 202 with fresh deliveries, 403 for a source with replay: false, 404 for an unknown event")
    func replay() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await TestServer.start(yaml: Self.fanOutConfig(sink: sink.url))
        let id = try #require(try await server.post("flaky", json: #"{"n":1}"#).json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id)

        let replayed = try await adminPost("\(server.adminURL)/admin/events/\(id)/replay")
        #expect(replayed.status == 202)
        #expect(replayed.json?["status"] == "scheduled")
        let newID = try #require(replayed.json?["deliveries"]?.arrayValue?.first?.stringValue)
        try await server.waitForDeliveries(of: id)
        let webhookIDs = sink.requests("/flaky").compactMap { $0.header("webhook-id") }
        #expect(webhookIDs.count == 2 && webhookIDs.last == newID)
        let deliveries = try #require(try await server.detail(id)?.deliveries)
        #expect(deliveries.count == 2 && deliveries[1].replayOf == deliveries[0].id)

        let locked = try #require(try await server.post("locked", json: "{}").json?["id"]?.stringValue)
        let forbidden = try await adminPost("\(server.adminURL)/admin/events/\(locked)/replay")
        #expect(forbidden.status == 403)
        #expect(forbidden.json?["error"] == "replay_disabled")
        #expect(forbidden.json?["detail"] == "replay is disabled for source 'locked' (replay: false)")

        let missing = try await adminPost("\(server.adminURL)/admin/events/nope/replay")
        #expect(missing.status == 404)
        #expect(missing.json?["error"] == "not_found")
        #expect(missing.header("X-Request-Id") != nil)
        try await server.stop()
        try await sink.stop()
    }

    @Test("hookproxy replay EVENT_ID from the command line schedules deliveries a running server sends")
    func cliReplay() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await TestServer.start(yaml: Self.fanOutConfig(sink: sink.url))
        let id = try #require(try await server.post("flaky", json: "{}").json?["id"]?.stringValue)
        let locked = try #require(try await server.post("locked", json: "{}").json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id)
        let hookproxy = PluginLoader.executableDirectory + "/hookproxy"
        let result = try await shell("'\(hookproxy)' replay --config '\(server.directory)/sources.yaml' \(id)")
        #expect(result.status == 0)
        #expect(result.output.contains("\(id): scheduled 1 delivery"))
        try await waitUntil("the replayed delivery") { sink.requests("/flaky").count == 2 }
        let refused = try await shell("'\(hookproxy)' replay --config '\(server.directory)/sources.yaml' \(locked) does-not-exist")
        #expect(refused.status == 1)
        #expect(refused.output.contains("\(locked): replay is disabled for source 'locked' (replay: false)"))
        #expect(refused.output.contains("does-not-exist: no such event"))
        try await server.stop()
        try await sink.stop()
    }

    @Test("rejected requests get a JSON error naming the problem and store nothing")
    func rejections() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let yaml = Self.fanOutConfig(sink: sink.url).replacingOccurrences(
            of: "  listen: \"127.0.0.1:0\"", with: "  listen: \"127.0.0.1:0\"\n  max_body_bytes: 64")
        let server = try await TestServer.start(yaml: yaml)
        let unknown = try await server.post("nope", json: "{}")
        #expect(unknown.status == 404 && unknown.json?["error"] == "unknown_source")
        let missing = try await server.post("github", json: #"{"action":"x"}"#)
        #expect(missing.status == 400)
        #expect(missing.json?["detail"] == "required field 'repo' ($.repository.full_name) is missing from the request")
        let malformed = try await server.post("github", json: #"{"repository":"#)
        #expect(malformed.status == 400 && malformed.json?["error"] == "invalid_body")
        let large = try await server.post("flaky", json: "[" + String(repeating: "1,", count: 40) + "1]")
        #expect(large.status == 413 && large.json?["error"] == "body_too_large")
        for response in [unknown, missing, malformed, large] { #expect(response.header("X-Request-Id") != nil) }
        let echoed = try await server.post("nope", json: "{}", headers: [("X-Request-Id", "trace-123")])
        #expect(echoed.header("X-Request-Id") == "trace-123")
        #expect(try await server.store.queueDepths().isEmpty, "a rejected request stored a delivery")
        try await server.stop()
        try await sink.stop()
    }

    @Test("form-encoded payload= bodies are mapped like JSON; other bodies are stored and forwarded as they are")
    func bodyKinds() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await TestServer.start(yaml: Self.fanOutConfig(sink: sink.url))
        let form =
            "payload=" + #"{"repository":{"full_name":"acme/form"},"action":"closed"}"#.addingPercentEncoding(
                withAllowedCharacters: .alphanumerics)!
        let formResponse = try await send(
            .POST, "\(server.ingestURL)/webhooks/github", body: Array(form.utf8),
            headers: [("Content-Type", "application/x-www-form-urlencoded")])
        #expect(formResponse.status == 202)
        let formID = try #require(formResponse.json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: formID)
        #expect(sink.requests("/discord").first?.json?["embeds"]?.arrayValue?.first?["title"] == "acme/form: closed")

        let binary: [UInt8] = [0x00, 0xFF, 0x10, 0x80]
        let raw = try await send(
            .POST, "\(server.ingestURL)/webhooks/flaky", body: binary, headers: [("Content-Type", "application/octet-stream")])
        #expect(raw.status == 202)
        try await waitUntil("the raw body to arrive") { !sink.requests("/flaky").isEmpty }
        #expect(sink.requests("/flaky").first?.body == binary)
        #expect(sink.requests("/flaky").first?.header("Content-Type") == "application/octet-stream")
        try await server.stop()
        try await sink.stop()
    }

    @Test("concurrent requests share commits: many events, far fewer transactions")
    func groupCommit() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await TestServer.start(yaml: Self.fanOutConfig(sink: sink.url))
        let count = 400
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<count { group.addTask { try await server.post("locked", json: #"{"n":\#(index)}"#).status } }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(statuses.allSatisfy { $0 == 202 })
        let batches = server.server.ingestWriter.batchCount
        #expect(batches < count, "\(count) events took \(batches) commits")
        // Delivery is not what this measures: 400 on a loaded debug build may take tens of seconds.
        try await waitUntil("all \(count) deliveries", timeout: .seconds(90)) { sink.requests("/generic").count >= count }
        try await server.stop()
        try await sink.stop()
    }

    @Test("events acknowledged while the destination is down are delivered after a restart")
    func restartDelivers() async throws {
        let port = try unusedPort()
        let directory = TestPaths.temporaryDirectory("restart")
        let yaml =
            testServerSection() + """
                destinations:
                  later:
                    formatter: generic
                    url: "http://127.0.0.1:\(port)/later"
                    retry: { schedule: [300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms] }
                sources:
                  app: { destinations: [later] }
                """
        let first = try await TestServer.start(yaml: yaml, directory: directory)
        var ids: [String] = []
        for index in 0..<5 {
            let response = try await first.post("app", json: #"{"n":\#(index)}"#)
            #expect(response.status == 202)
            ids.append(try #require(response.json?["id"]?.stringValue))
        }
        // The destination is down: attempts fail (and after a few the circuit breaker holds the rest).
        try await waitUntil("failed attempts") {
            var attempts = 0
            for id in ids { attempts += try await first.detail(id)?.deliveries.first?.attempts ?? 0 }
            return attempts >= 2
        }
        try await first.stop()

        let sink = RecordingSink()
        try await sink.start(port: port)
        let second = try await TestServer.start(yaml: yaml, directory: directory)
        for id in ids { try await second.waitForDeliveries(of: id) }
        let bodies = Set(sink.requests("/later").map(\.text))
        #expect(bodies == Set((0..<5).map { #"{"n":\#($0)}"# }))
        try await second.stop()
        try await sink.stop()
    }
}
