import Foundation
import PluginKit
import Testing

@testable import Host

/// Retries, rate limits, ordering and the circuit breaker, against a real loopback sink that answers as scripted.
@Suite("Delivery policy")
struct DeliveryPolicyTests {
    /// A server with one source `app` delivering (generic, raw) to one destination `out` configured by `settings`.
    static func start(sink: RecordingSink, settings: String, path: String = "/out") async throws -> TestServer {
        let yaml =
            testServerSection() + """
                destinations:
                  out:
                    formatter: generic
                    url: "\(sink.url)\(path)"
                \(settings.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
                sources:
                  app: { destinations: [out] }
                """
        return try await TestServer.start(yaml: yaml)
    }

    static func gaps(_ requests: [RecordingSink.Recorded]) -> [Int64] {
        zip(requests.dropFirst(), requests).map { $0.arrivedAt - $1.arrivedAt }
    }

    @Test("the retry schedule's delays are kept, and jitter stays within its bounds")
    func scheduleAndJitter() async throws {
        var policy = RetryPolicy(backoff: .schedule([.seconds(10), .seconds(60)]), jitter: 0.2)
        #expect(policy.delay(afterAttempt: 1, random: -1) == .seconds(8))
        #expect(policy.delay(afterAttempt: 1, random: 1) == .seconds(12))
        #expect(policy.delay(afterAttempt: 3) == nil)
        for _ in 0..<1000 {
            let delay = try #require(policy.delay(afterAttempt: 2))
            #expect(delay >= .seconds(48) && delay <= .seconds(72))
        }
        policy.backoff = .exponential(initial: .seconds(1), multiplier: 2, maximum: .seconds(5), attempts: 6)
        policy.jitter = 0
        #expect((1...5).map { policy.delay(afterAttempt: $0) } == [.seconds(1), .seconds(2), .seconds(4), .seconds(5), .seconds(5)])
        #expect(policy.delay(afterAttempt: 6) == nil)

        let sink = RecordingSink()
        try await sink.start()
        sink.plan("/out", statuses: [500, 500])
        let server = try await Self.start(sink: sink, settings: "retry: { schedule: [300ms, 2500ms], jitter: 0 }")
        let id = try #require(try await server.post("app", json: "{}").json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id)
        let gaps = Self.gaps(sink.requests("/out"))
        try #require(gaps.count == 2)
        // Lower bounds are exact. Upper bounds leave room for a loaded CI machine (a 300 ms retry once took 6.3 s there)
        // and still tell the configured schedule from the default one, whose second delay is a minute.
        #expect(gaps[0] >= 300 && gaps[0] < 30_000, "first retry after \(gaps[0]) ms")
        #expect(gaps[1] >= 2500 && gaps[1] < 30_000, "second retry after \(gaps[1]) ms")
        try await server.stop()
        try await sink.stop()
    }

    @Test("a 429 with Retry-After: 2 means nothing is sent to that destination for 2 s, and the wait is not an attempt")
    func retryAfterSeconds() async throws {
        let sink = RecordingSink()
        try await sink.start()
        sink.plan("/out", responses: [.init(status: 429, headers: [("Retry-After", "2")])])
        let server = try await Self.start(sink: sink, settings: "max_concurrency: 1")
        let first = try #require(try await server.post("app", json: #"{"n":1}"#).json?["id"]?.stringValue)
        try await waitUntil("the 429") { sink.requests("/out").count == 1 }
        let second = try #require(try await server.post("app", json: #"{"n":2}"#).json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: first)
        try await server.waitForDeliveries(of: second)
        let requests = sink.requests("/out")
        #expect(requests.count == 3)
        #expect(
            requests.dropFirst().allSatisfy { $0.arrivedAt - requests[0].arrivedAt >= 1990 }, "sent into the window: \(Self.gaps(requests))"
        )
        let delivery = try #require(try await server.detail(first)?.deliveries.first)
        #expect(delivery.history.map(\.httpStatus) == [429, 200])
        #expect(delivery.attempts == 1, "a rate-limit wait must not count as a failed attempt")
        try await server.stop()
        try await sink.stop()
    }

    @Test("Retry-After as an HTTP date on a 503 is a minimum wait; the 503 counts as an attempt")
    func retryAfterDate() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        let date = formatter.string(from: Date().addingTimeInterval(4))
        sink.plan("/out", responses: [.init(status: 503, headers: [("Retry-After", date)])])
        let server = try await Self.start(sink: sink, settings: "retry: { schedule: [100ms], jitter: 0 }")
        let id = try #require(try await server.post("app", json: "{}").json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id)
        let requests = sink.requests("/out")
        let notBefore = Int64(try #require(formatter.date(from: date)).timeIntervalSince1970 * 1000)
        #expect(requests.count == 2)
        #expect(requests[1].arrivedAt >= notBefore, "retried \(notBefore - requests[1].arrivedAt) ms before Retry-After: \(date)")
        #expect(try await server.detail(id)?.deliveries.first?.attempts == 2)
        try await server.stop()
        try await sink.stop()
    }

    @Test("Discord's rate-limit headers and a JSON retry_after keep requests out of the announced windows")
    func discordRateLimits() async throws {
        let sink = RecordingSink()
        try await sink.start()
        sink.plan(
            "/out",
            responses: [
                .init(
                    status: 204,
                    headers: [("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset-After", "1.5"), ("X-RateLimit-Bucket", "b1")]),
                .init(
                    status: 429, headers: [("Content-Type", "application/json")],
                    body: #"{"message":"slow down","retry_after":1.2,"global":false}"#),
            ])
        let server = try await Self.start(sink: sink, settings: "max_concurrency: 1")
        let first = try #require(try await server.post("app", json: #"{"n":1}"#).json?["id"]?.stringValue)
        let second = try #require(try await server.post("app", json: #"{"n":2}"#).json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: first)
        try await server.waitForDeliveries(of: second)
        let gaps = Self.gaps(sink.requests("/out"))
        #expect(gaps.count == 2)
        #expect(gaps[0] >= 1490, "sent \(gaps[0]) ms after X-RateLimit-Remaining: 0 with Reset-After: 1.5")
        #expect(gaps[1] >= 1190, "sent \(gaps[1]) ms after a 429 with retry_after: 1.2")
        #expect(try await server.detail(second)?.deliveries.first?.attempts == 1)
        try await server.stop()
        try await sink.stop()
    }

    @Test("store_response keeps nothing, a prefix or the default 4 KiB of each answer; a retry_after is honoured either way")
    func storedResponses() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let echo = String(repeating: "echoed-request-", count: 400)
        sink.answerByDefault(.init(status: 200, body: echo))
        sink.plan(
            "/none",
            responses: [.init(status: 429, headers: [("Content-Type", "application/json")], body: #"{"retry_after": 1.5}"#)])
        let yaml =
            testServerSection() + """
                destinations:
                  none: { formatter: generic, url: "\(sink.url)/none", store_response: false }
                  some: { formatter: generic, url: "\(sink.url)/some", store_response: 10 }
                  standard: { formatter: generic, url: "\(sink.url)/standard" }
                sources:
                  app: { destinations: [none, some, standard] }
                """
        let server = try await TestServer.start(yaml: yaml)
        let id = try #require(try await server.post("app", json: "{}").json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id)
        let deliveries = try #require(try await server.detail(id)?.deliveries)
        let byName = Dictionary(uniqueKeysWithValues: deliveries.map { ($0.destination, $0) })
        let none = try #require(byName["none"])
        #expect(none.history.map(\.responseBody.count) == [0, 0])
        let requests = sink.requests("/none")
        #expect(
            requests.count == 2 && requests[1].arrivedAt - requests[0].arrivedAt >= 1490,
            "the retry_after in the unstored body was not honoured")
        #expect(byName["some"]?.history.first?.responseBody == Array(echo.utf8.prefix(10)))
        #expect(byName["standard"]?.history.first?.responseBody == Array(echo.utf8.prefix(4096)))
        #expect(
            (try? ConfigLoader(environment: [:]).load(
                yaml:
                    "destinations:\n  out: { formatter: generic, url: \"http://127.0.0.1:9/x\", store_response: 1MB }\nsources:\n  a: { destinations: [out] }\n",
                file: "/s.yaml")) == nil)
        try await server.stop()
        try await sink.stop()
    }

    @Test("4xx other than 408/409/425/429 are permanent unless the destination lists them as retryable")
    func classification() async throws {
        let sink = RecordingSink()
        try await sink.start()
        sink.plan("/out", statuses: [404, 408])
        let lenient = try await Self.start(sink: sink, settings: "retry: { schedule: [100ms, 100ms], retryable_statuses: [404, 408] }")
        let retried = try #require(try await lenient.post("app", json: "{}").json?["id"]?.stringValue)
        try await lenient.waitForDeliveries(of: retried)
        #expect(try await lenient.detail(retried)?.deliveries.first?.history.map(\.httpStatus) == [404, 408, 200])
        try await lenient.stop()

        sink.plan("/out", statuses: [410])
        let strict = try await Self.start(sink: sink, settings: "retry: { schedule: [100ms] }")
        let dead = try #require(try await strict.post("app", json: "{}").json?["id"]?.stringValue)
        try await strict.waitForDeliveries(of: dead, toBe: [.dead])
        #expect(try await strict.detail(dead)?.deliveries.first?.attempts == 1)
        try await strict.stop()
        try await sink.stop()
    }

    @Test("a delivery whose next retry would pass max_age is dead")
    func maximumAge() async throws {
        let sink = RecordingSink()
        try await sink.start()
        sink.plan("/out", statuses: Array(repeating: 500, count: 10))
        let server = try await Self.start(
            sink: sink, settings: "retry: { schedule: [200ms, 200ms, 200ms, 200ms, 200ms], jitter: 0, max_age: 500ms }")
        let id = try #require(try await server.post("app", json: "{}").json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id, toBe: [.dead])
        let delivery = try #require(try await server.detail(id)?.deliveries.first)
        #expect(delivery.attempts < 5)
        #expect(delivery.lastError?.contains("older than max_age") == true)
        try await server.stop()
        try await sink.stop()
    }

    @Test("rate_limit 2/1s spaces deliveries: never more than 2 in any second")
    func rateLimitSpacing() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await Self.start(sink: sink, settings: "rate_limit: 2/1s")
        var ids: [String] = []
        for index in 0..<6 { ids.append(try #require(try await server.post("app", json: #"{"n":\#(index)}"#).json?["id"]?.stringValue)) }
        for id in ids { try await server.waitForDeliveries(of: id) }
        let times = sink.requests("/out").map(\.arrivedAt).sorted()
        #expect(times.count == 6)
        for index in 2..<times.count {
            #expect(times[index] - times[index - 2] >= 970, "3 requests within \(times[index] - times[index - 2]) ms")
        }
        #expect(times[5] - times[0] >= 1900)
        try await server.stop()
        try await sink.stop()
    }

    @Test("FIFO delivers strictly in ingest order behind a failing head; a concurrent destination is not delayed")
    func fifo() async throws {
        let sink = RecordingSink()
        try await sink.start()
        sink.plan("/fifo", statuses: [500, 500])
        let yaml =
            testServerSection() + """
                destinations:
                  ordered:
                    formatter: generic
                    url: "\(sink.url)/fifo"
                    ordering: fifo
                    retry: { schedule: [1s, 1s, 1s], jitter: 0 }
                  fast:
                    formatter: generic
                    url: "\(sink.url)/fast"
                sources:
                  app: { destinations: [ordered, fast] }
                """
        let server = try await TestServer.start(yaml: yaml)
        var ids: [String] = []
        for index in 0..<5 { ids.append(try #require(try await server.post("app", json: #"{"n":\#(index)}"#).json?["id"]?.stringValue)) }
        for id in ids { try await server.waitForDeliveries(of: id) }
        let ordered = sink.requests("/fifo").map(\.text)
        #expect(ordered == [0, 0, 0, 1, 2, 3, 4].map { #"{"n":\#($0)}"# })
        let fast = sink.requests("/fast")
        #expect(fast.count == 5)
        let secondFIFO = try #require(sink.requests("/fifo").dropFirst(3).first)
        #expect(fast.allSatisfy { $0.arrivedAt < secondFIFO.arrivedAt }, "the concurrent destination waited for the FIFO line")
        try await server.stop()
        try await sink.stop()
    }

    @Test("the circuit breaker opens after N failures, holds queued deliveries without spending attempts, probes, closes")
    func circuitBreaker() async throws {
        let sink = RecordingSink()
        try await sink.start()
        sink.plan("/out", statuses: [500, 500, 500])
        let server = try await Self.start(
            sink: sink,
            settings:
                "max_concurrency: 1\ncircuit_breaker: { failures: 2, cooldown: 5s }\nretry: { schedule: [50ms, 50ms, 50ms, 50ms], jitter: 0 }"
        )
        var ids: [String] = []
        for index in 0..<4 { ids.append(try #require(try await server.post("app", json: #"{"n":\#(index)}"#).json?["id"]?.stringValue)) }

        try await waitUntil("two failures") { sink.requests("/out").count >= 2 }
        let secondFailure = sink.requests("/out").dropFirst().first?.arrivedAt ?? 0
        let state = try await send(.GET, "\(server.adminURL)/admin/destinations")
        let out = try #require(state.json?["destinations"]?.arrayValue?.first)
        // A starved test may read the state after the 5 s cool-down; the gaps below still show the pause.
        if Clock.milliseconds() < secondFailure + 4500 {
            #expect(out["state"] == "paused")
            #expect(out["paused_until"]?.stringValue != nil)
        }
        // While paused, queued deliveries wait without spending attempts: two failures, two attempts, for the whole pause.
        func attemptsSpent() async throws -> Int {
            var total = 0
            for id in ids { total += try await server.detail(id)?.deliveries.first?.attempts ?? 0 }
            return total
        }
        try await waitUntil("both failures recorded") { try await attemptsSpent() == 2 }
        let opened = secondFailure
        let midPause = opened + 1000 - Clock.milliseconds()
        if midPause > 0 { try await Task.sleep(for: .milliseconds(midPause)) }
        // Read while the pause lasts (a starved test may get here late: then the probe may have been sent already).
        let spent = try await attemptsSpent()
        if Clock.milliseconds() < opened + 4500 { #expect(spent == 2) }
        #expect(sink.requests("/out").filter { $0.arrivedAt < opened + 4990 }.count == 2, "a request was sent during the pause")

        for id in ids { try await server.waitForDeliveries(of: id) }
        let requests = sink.requests("/out")
        let gaps = Self.gaps(requests)
        // failure, failure, [paused 5 s], probe fails, [paused 5 s], probe succeeds, then the rest. The long cool-down keeps
        // the "paused" check above true on a starved machine.
        #expect(requests.count == 3 + 4)
        #expect(gaps[1] >= 4990 && gaps[2] >= 4990, "gaps \(gaps)")
        let closed = try await send(.GET, "\(server.adminURL)/admin/destinations")
        #expect(closed.json?["destinations"]?.arrayValue?.first?["state"] == "healthy")
        try await server.stop()
        try await sink.stop()
    }

    @Test("concurrent requests with one idempotency key store one event: one 202, the rest duplicates of it")
    func concurrentDuplicates() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let yaml =
            testServerSection() + """
                destinations:
                  out: { formatter: generic, url: "\(sink.url)/out" }
                sources:
                  app:
                    idempotency_key: "body:$.delivery"
                    destinations: [out]
                """
        let server = try await TestServer.start(yaml: yaml)
        let responses = try await withThrowingTaskGroup(of: TestResponse.self) { group in
            for _ in 0..<30 { group.addTask { try await server.post("app", json: #"{"delivery":"d-1"}"#) } }
            return try await group.reduce(into: [TestResponse]()) { $0.append($1) }
        }
        #expect(responses.filter { $0.status == 202 }.count == 1)
        #expect(responses.filter { $0.status == 200 && $0.json?["status"] == "duplicate" }.count == 29)
        #expect(Set(responses.compactMap { $0.json?["id"]?.stringValue }).count == 1)
        let id = try #require(responses.first?.json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id)
        #expect(try await server.store.queueDepths().isEmpty)
        #expect(sink.requests("/out").count == 1)
        try await server.stop()
        try await sink.stop()
    }

    @Test("retention purges finished events with their deliveries and attempts, and keeps unfinished ones")
    func retention() async throws {
        let sink = RecordingSink()
        try await sink.start()
        sink.plan("/stuck", statuses: Array(repeating: 500, count: 50))
        let yaml =
            testServerSection().replacingOccurrences(
                of: "  url: \"sqlite:data/hookproxy.sqlite\"", with: "  url: \"sqlite:data/hookproxy.sqlite\"\n  retention: 300ms") + """
                destinations:
                  out: { formatter: generic, url: "\(sink.url)/out" }
                  stuck: { formatter: generic, url: "\(sink.url)/stuck", retry: { schedule: [1h] } }
                sources:
                  app: { idempotency_key: "header:X-Key", destinations: [out] }
                  slow: { destinations: [stuck] }
                """
        let server = try await TestServer.start(yaml: yaml)
        let done = try #require(try await server.post("app", json: "{}", headers: [("X-Key", "k1")]).json?["id"]?.stringValue)
        let waiting = try #require(try await server.post("slow", json: "{}").json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: done)
        try await server.waitForDeliveries(of: waiting, toBe: [.retrying])
        try await Task.sleep(for: .milliseconds(400))
        let sweeper = RetentionSweeper(store: server.store, runtime: server.server.runtime, logger: testLogger, batch: 1)
        #expect(await sweeper.sweep() == 1)
        #expect(try await server.detail(done) == nil)
        #expect(try await server.detail(waiting) != nil)
        // The idempotency key went with its event.
        #expect(try await server.post("app", json: "{}", headers: [("X-Key", "k1")]).status == 202)
        try await server.stop()
        try await sink.stop()
    }

    @Test("Standard Webhooks signatures reproduce the specification's published test vector")
    func signatureTestVector() throws {
        let secret = try #require(Data(base64Encoded: "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
        let signature = WebhookSigner.signature(
            secrets: [Array(secret)], id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1_614_265_330,
            body: Array(#"{"test": 2432232314}"#.utf8))
        #expect(signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
    }

    @Test("every request is signed with each configured secret over exactly the id, timestamp and body sent")
    func signedRequests() async throws {
        let sink = RecordingSink()
        try await sink.start()
        sink.plan("/out", statuses: [500])
        let secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_" + Data("second secret".utf8).base64EncodedString()]
        let server = try await Self.start(
            sink: sink, settings: "signing_secret: [\"\(secrets[0])\", \"\(secrets[1])\"]\nretry: { schedule: [100ms] }")
        let id = try #require(try await server.post("app", json: #"{"a":1}"#).json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id)
        let keys = secrets.map { Array(Data(base64Encoded: String($0.dropFirst(6)))!) }
        let requests = sink.requests("/out")
        #expect(requests.count == 2)
        for request in requests {
            let webhookID = try #require(request.header("webhook-id"))
            let timestamp = try #require(Int64(request.header("webhook-timestamp") ?? ""))
            let header = try #require(request.header("webhook-signature"))
            #expect(header.split(separator: " ").count == 2)
            #expect(header == WebhookSigner.signature(secrets: keys, id: webhookID, timestamp: timestamp, body: request.body))
        }
        #expect(Set(requests.map { $0.header("webhook-id") }).count == 1)
        try await server.stop()
        try await sink.stop()
    }
}

@Suite("Destination state")
struct DestinationStateTests {
    @Test("hookproxy destinations shows each destination's state and queue from the running server")
    func cliShowsState() async throws {
        let sink = RecordingSink()
        try await sink.start()
        sink.plan("/out", statuses: [500])
        let server = try await DeliveryPolicyTests.start(
            sink: sink, settings: "circuit_breaker: { failures: 1, cooldown: 1h }\nrate_limit: 5/2s\nretry: { schedule: [1h] }")
        let id = try #require(try await server.post("app", json: "{}").json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id, toBe: [.retrying])
        let yaml = try String(contentsOfFile: server.directory + "/sources.yaml", encoding: .utf8)
        let cliConfig = server.directory + "/cli.yaml"
        try yaml.replacingOccurrences(of: "admin_listen: \"127.0.0.1:0\"", with: "admin_listen: \"127.0.0.1:\(server.adminPort)\"")
            .write(toFile: cliConfig, atomically: true, encoding: .utf8)
        let hookproxy = PluginLoader.executableDirectory + "/hookproxy"
        let table = try await shell("'\(hookproxy)' destinations --config '\(cliConfig)'")
        #expect(table.status == 0)
        let row = try #require(table.output.split(separator: "\n").first { $0.hasPrefix("out ") })
        let columns = row.split(separator: " ", omittingEmptySubsequences: true)
        #expect(columns[1] == "paused")
        #expect(columns[4] == "1", "one delivery retrying: \(row)")
        let json = try await shell("'\(hookproxy)' destinations --config '\(cliConfig)' --json")
        let out = try #require(try JSONValue(parsing: json.output)["destinations"]?.arrayValue?.first)
        #expect(out["rate_limit"] == "5/2s")
        #expect(out["consecutive_failures"] == 1)
        try await server.stop()
        let down = try await shell("'\(hookproxy)' destinations --config '\(cliConfig)'")
        #expect(down.status == 1)
        #expect(down.output.contains("cannot reach the admin API"))
        try await sink.stop()
    }
}

@Suite("Shared rate-limit buckets")
struct RateLimitBucketTests {
    static func destination(_ name: String) -> DestinationConfig {
        DestinationConfig(
            name: name, formatter: "generic", options: [:], url: "http://127.0.0.1:9/\(name)", headers: [], timeout: .seconds(5),
            retry: RetryPolicy(), rateLimit: nil, maxConcurrency: 1, ordering: .concurrent, circuitBreaker: CircuitBreakerPolicy(),
            signingSecrets: [], location: ConfigLocation(file: "t", line: 1, key: "k"))
    }

    @Test("a window learned on one destination holds back another whose answers named the same X-RateLimit-Bucket")
    func sharedBucket() {
        let buckets = RateLimitBuckets()
        let a = DestinationLane(destination: Self.destination("a"), buckets: buckets, logger: testLogger)
        let b = DestinationLane(destination: Self.destination("b"), buckets: buckets, logger: testLogger)
        let c = DestinationLane(destination: Self.destination("c"), buckets: buckets, logger: testLogger)
        // Each lane's first answer names its bucket; a and b share one.
        for (lane, bucket) in [(a, "shared-1"), (b, "shared-1"), (c, "other")] {
            #expect(lane.admission(now: 1000).slots == 1)
            lane.started(1)
            lane.learn(.succeeded, bucket: bucket)
            lane.finished(.succeeded, now: 1000)
        }
        // a is told to wait until 3000.
        a.started(1)
        b.started(1)
        // b was admitted before a's answer closed the bucket: it must not be sent until the window opens.
        a.learn(.rateLimited(until: 3000), bucket: "shared-1")
        #expect(b.closedUntil(now: 1500) == 3000, "b would be sent into a's window")
        #expect(c.closedUntil(now: 1500) == nil)
        a.finished(.rateLimited(until: 3000), now: 1000)
        b.finished(.succeeded, now: 1000)
        #expect(a.admission(now: 1500) == (0, 3000))
        let held = b.admission(now: 1500)
        #expect(held.slots == 0 && held.wakeAt == 3000, "b sent into a's window")
        #expect(c.admission(now: 1500).slots == 1, "another bucket is not held back")
        #expect(b.admission(now: 3001).slots == 1)
    }

    @Test("a window learned on one destination holds back another that answered with the same X-RateLimit-Bucket, end to end")
    func sharedBucketEndToEnd() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let bucket = [("X-RateLimit-Bucket", "shared-1")]
        sink.plan("/a", responses: [.init(status: 204, headers: bucket), .init(status: 429, headers: bucket + [("Retry-After", "2")])])
        sink.plan("/b", responses: [.init(status: 204, headers: bucket)])
        let yaml =
            testServerSection() + """
                destinations:
                  a: { formatter: generic, url: "\(sink.url)/a", max_concurrency: 1 }
                  b: { formatter: generic, url: "\(sink.url)/b", max_concurrency: 1 }
                sources:
                  to-a: { destinations: [a] }
                  to-b: { destinations: [b] }
                """
        let server = try await TestServer.start(yaml: yaml)
        // Both destinations learn their bucket.
        let first = try #require(try await server.post("to-a", json: "{}").json?["id"]?.stringValue)
        let second = try #require(try await server.post("to-b", json: "{}").json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: first)
        try await server.waitForDeliveries(of: second)
        // A lane frees its slot once the outcome is committed: wait until both are idle.
        try await waitUntil("both lanes idle") {
            let state = try await send(.GET, "\(server.adminURL)/admin/destinations")
            return state.json?["destinations"]?.arrayValue?.allSatisfy { $0["in_flight"] == 0 } == true
        }
        // a is told to wait 2 s; b shares the bucket, so its next request waits too.
        _ = try await server.post("to-a", json: "{}")
        try await waitUntil("a to be rate limited") {
            let state = try await send(.GET, "\(server.adminURL)/admin/destinations")
            return state.json?["destinations"]?.arrayValue?.first { $0["name"] == "a" }?["state"] == "rate_limited"
        }
        let limitedAt = try #require(sink.requests("/a").last?.arrivedAt)
        let held = try #require(try await server.post("to-b", json: "{}").json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: held)
        let sentAt = try #require(sink.requests("/b").last?.arrivedAt)
        #expect(sentAt - limitedAt >= 1900, "b sent \(sentAt - limitedAt) ms into a's shared window")
        try await server.stop()
        try await sink.stop()
    }
}
