import Foundation
import PluginKit
import Testing

@testable import Host

/// Numbers from outside that once trapped the process: NaN, infinities, huge, negative, empty and absurd dates, in every
/// header and body field hookproxy reads a number from, sent through the real server; a hostile sink answers with them.
@Suite("Hostile numbers")
struct HostileNumbersTests {
    /// The values every field is tried with.
    static let values = [
        "nan", "NaN", "inf", "-inf", "Infinity", "1e300", "-1", "99999999999999999999", "", "   ", "0x1p10",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ]

    /// How a hostile answer carries a value: the status and headers (or body) it is put in.
    static let answerKinds: [(name: String, answer: @Sendable (String) -> RecordingSink.Planned)] = [
        ("429-retry-after", { .init(status: 429, headers: [("Retry-After", $0)]) }),
        ("503-retry-after", { .init(status: 503, headers: [("Retry-After", $0)]) }),
        ("429-reset-after", { .init(status: 429, headers: [("X-RateLimit-Reset-After", $0)]) }),
        ("200-window", { .init(status: 200, headers: [("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset-After", $0)]) }),
        ("200-remaining", { .init(status: 200, headers: [("X-RateLimit-Remaining", $0), ("X-RateLimit-Reset-After", "1e300")]) }),
        (
            "429-json-retry-after",
            { .init(status: 429, headers: [("Content-Type", "application/json")], body: #"{"message":"slow","retry_after":\#($0)}"#) }
        ),
        (
            "429-json-string",
            { .init(status: 429, headers: [("Content-Type", "application/json")], body: #"{"retry_after":"\#($0)"}"#) }
        ),
    ]

    @Test("a hostile receiver's waits (Retry-After, X-RateLimit-*, retry_after) never stop the server; every delivery is delivered")
    func hostileReceiver() async throws {
        let sink = RecordingSink()
        try await sink.start()
        var destinations = ""
        var routes: [String] = []
        for (kind, answer) in Self.answerKinds {
            for (index, value) in Self.values.enumerated() {
                let name = "\(kind)-\(index)"
                destinations += "  \(name): { formatter: generic, url: \"\(sink.url)/\(name)\" }\n"
                routes.append(name)
                // The hostile answer first, then the sink's default 200.
                sink.plan("/\(name)", responses: [answer(value)])
            }
        }
        let yaml =
            // A 30 s send timeout: on a loaded two-core machine a first attempt has timed out at 5 s before reading the
            // hostile answer this test is about.
            testServerSection().replacingOccurrences(of: "  timeout: 5s", with: "  timeout: 30s\n  max_retry_after: 2s") + """
                destinations:
                \(destinations)
                  plain: { formatter: generic, url: "\(sink.url)/plain" }
                sources:
                  app: { destinations: [\(routes.joined(separator: ", "))] }
                  other: { destinations: [plain] }
                """
        let server = try await TestServer.start(yaml: yaml)
        let id = try #require(try await server.post("app", json: #"{"n":1}"#).json?["id"]?.stringValue)
        // Meanwhile the server keeps serving: health, ingest, admin.
        for round in 0..<5 {
            #expect(try await send(.GET, "\(server.adminURL)/healthz").status == 200)
            #expect(try await server.post("other", json: #"{"round":\#(round)}"#).status == 202)
            try await Task.sleep(for: .milliseconds(100))
        }
        // Clamped to max_retry_after (2 s) or ignored, every wait ends: the planned 200 comes next for each.
        try await server.waitForDeliveries(of: id, timeout: .seconds(60))
        try await waitUntil("the other source's events delivered") { sink.requests("/plain").count == 5 }
        let detail = try #require(try await server.detail(id))
        #expect(detail.deliveries.count == routes.count)
        for delivery in detail.deliveries {
            let first = try #require(delivery.history.first, "\(delivery.destination) has no attempt")
            // A wait asked for is honoured for at most 2 s (and scheduling slack for a loaded two-core machine; what
            // is tested is that 1e300 s and the like became 2 s, not the scheduler). The full suite on a slow day has
            // taken 12.5 s between the attempts: 60 destinations retrying at once in a server that shares two cores
            // with the rest of the suite.
            if let second = delivery.history.dropFirst().first {
                #expect(
                    second.startedAt - first.startedAt < 2000 + 20_000,
                    "\(delivery.destination): waited \(second.startedAt - first.startedAt) ms")
            }
        }
        let clamped = try #require(detail.deliveries.first { $0.destination == "429-retry-after-5" })
        #expect(
            clamped.history.first?.error?.contains("Retry-After 1e+300 s, longer than max_retry_after; waiting 2s") == true,
            "\(clamped.history.first?.error ?? "no error")")
        let dated = try #require(detail.deliveries.first { $0.destination == "429-retry-after-11" })
        #expect(dated.history.first?.error?.contains("longer than max_retry_after") == true, "\(dated.history.first?.error ?? "")")
        #expect(try await send(.GET, "\(server.adminURL)/healthz").status == 200)
        try await server.stop()
        try await sink.stop()
    }

    @Test("hostile timestamps on every preset that reads one are a 401, never a crash")
    func hostileTimestamps() async throws {
        let sink = RecordingSink()
        try await sink.start()
        // Every one of these requests fails verification on purpose: the address's budget for failures must not end the
        // test early (that budget has its own test in LimitsTests).
        let yaml =
            testServerSection().replacingOccurrences(of: "  listen:", with: "  rate_limit_unverified: 100000/1m\n  listen:") + """
                destinations:
                  out: { formatter: generic, url: "\(sink.url)/out" }
                sources:
                  slack: { verify: { preset: slack, secret: s }, destinations: [out] }
                  stripe: { verify: { preset: stripe, secret: s }, destinations: [out] }
                  sw: { verify: { preset: standard-webhooks, secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }, destinations: [out] }
                  hmac:
                    verify: { preset: hmac, secret: s, header: X-Sig, timestamp_header: X-Ts, signed: "{timestamp}.{body}" }
                    destinations: [out]
                """
        let server = try await TestServer.start(yaml: yaml)
        for value in Self.values + ["1e20", "17000000000000000000000", "+1700000000", "1700000000e0", "١٧٠٠٠٠٠٠٠٠"] {
            let requests: [(String, [(String, String)])] = [
                ("slack", [("X-Slack-Request-Timestamp", value), ("X-Slack-Signature", "v0=00")]),
                ("stripe", [("Stripe-Signature", "t=\(value),v1=00")]),
                ("sw", [("webhook-id", "msg_1"), ("webhook-timestamp", value), ("webhook-signature", "v1,AAAA")]),
                ("hmac", [("X-Sig", "00"), ("X-Ts", value)]),
            ]
            for (source, headers) in requests {
                let response = try await send(.POST, "\(server.ingestURL)/webhooks/\(source)", body: Array("x".utf8), headers: headers)
                #expect(response.status == 401, "\(source) with timestamp '\(value)' answered \(response.status)")
            }
        }
        #expect(try await send(.GET, "\(server.adminURL)/healthz").status == 200)
        #expect(try await server.store.listEvents(RecordFilter(), cursor: nil, limit: 10).items.isEmpty)
        try await server.stop()
        try await sink.stop()
    }

    @Test("hostile Content-Length values and admin parameters get a 4xx, never a crash")
    func hostileRequestNumbers() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await TestServer.start(
            yaml: testServerSection() + """
                destinations:
                  out: { formatter: generic, url: "\(sink.url)/out" }
                sources:
                  app: { destinations: [out], idempotency_key: "body:$.id" }
                """)
        for value in ["99999999999999999999", "-1", "nan", "1e300", "", " ", "18446744073709551616"] {
            let client = try RawClient(port: server.ingestPort)
            await client.send("POST /webhooks/app HTTP/1.1\r\nHost: x\r\nContent-Length: \(value)\r\n\r\n{}")
            let answer = await client.readAll(timeout: .seconds(2))
            client.close()
            // The first bytes in hex too: one full run (2026-12-07) saw a single unprintable byte before "HTTP/1.1 400".
            #expect(
                answer.isEmpty || answer.hasPrefix("HTTP/1.1 4"),
                "Content-Length '\(value)': \(answer.prefix(80)) (starts \(answer.utf8.prefix(12).map { String($0, radix: 16) }))")
        }
        for query in ["limit=1e300", "limit=nan", "limit=-1", "limit=99999999999999999999", "since=9999-12-31T23:59:59Z", "since=nan"] {
            let status = try await send(.GET, "\(server.adminURL)/admin/events?\(query)").status
            #expect(status == 200 || status == 400, "?\(query) answered \(status)")
        }
        let replay = try await send(
            .POST, "\(server.adminURL)/admin/replay", body: Array(#"{"limit": 1e300, "since": "+275760-09-13T00:00:00Z"}"#.utf8),
            headers: [("Content-Type", "application/json")])
        #expect(replay.status == 400)
        // Numbers as idempotency keys and payload values are text to hookproxy.
        for number in ["1e300", "-1", "99999999999999999999", "1E400", "-0"] {
            #expect(try await server.post("app", json: #"{"id": \#(number), "n": \#(number)}"#).status == 202)
        }
        #expect(try await server.post("app", json: #"{"id": 1e300}"#).json?["status"]?.stringValue == "duplicate")
        #expect(try await send(.GET, "\(server.adminURL)/healthz").status == 200)
        try await server.stop()
        try await sink.stop()
    }

    @Test("the receiver's wait fields are read only as finite, non-negative numbers, and clamped by max_retry_after")
    func announcedWaitParsing() throws {
        for value in ["nan", "NaN", "inf", "-inf", "Infinity", "-1", "", "   ", "0x1p10", "1e", "--1", "1,5"] {
            #expect(AnnouncedWait.seconds(value) == nil, "'\(value)' was read as a number of seconds")
            #expect(AnnouncedWait.parse(headers: [("Retry-After", value)], body: []) == nil, "Retry-After '\(value)'")
        }
        let huge = try #require(AnnouncedWait.parse(headers: [("Retry-After", "1e300")], body: []))
        #expect(huge.honoured(atMost: .seconds(3600)) == .seconds(3600))
        #expect(huge.exceeds(.seconds(3600)))
        let far = AnnouncedWait.parse(headers: [("Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT")], body: [])
        #expect(far?.honoured(atMost: .seconds(60)) == .seconds(60))
        let past = AnnouncedWait.parse(headers: [("Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT")], body: [])
        #expect(past?.honoured(atMost: .seconds(60)) == .zero)
        #expect(AnnouncedWait.parse(headers: [], body: Array(#"{"retry_after": 1e400}"#.utf8)) == nil)
        #expect(
            AnnouncedWait.parse(headers: [], body: Array(#"{"retry_after": 0.25}"#.utf8))?.honoured(atMost: .seconds(9))
                == .milliseconds(250))
        #expect(AnnouncedWait.window(headers: [("X-RateLimit-Remaining", "nan"), ("X-RateLimit-Reset-After", "1")]) == nil)
        #expect(
            AnnouncedWait.window(headers: [("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset-After", "99999999999999999999")])?
                .honoured(atMost: .seconds(5)) == .seconds(5))
    }

    @Test("saturating time arithmetic and conversions from floating point never trap")
    func saturation() {
        #expect(Int64(finite: .nan) == nil)
        #expect(Int64(finite: .infinity) == nil)
        #expect(Int64(finite: 1e300) == .max)
        #expect(Int64(finite: -1e300) == .min)
        #expect(Int64(finite: 9_223_372_036_854_775_807.0) == .max)
        #expect(Int64.max.addingSaturated(1) == .max)
        #expect(Int64.min.addingSaturated(-1) == .min)
        #expect(Int64.min.subtractingSaturated(1) == .min)
        #expect(Duration.seconds(Int64.max).wholeMilliseconds == .max)
        #expect(Duration(untrustedSeconds: .nan, atMost: .seconds(1)) == nil)
        #expect(Duration(untrustedSeconds: -0.5, atMost: .seconds(1)) == nil)
        #expect(Duration(untrustedSeconds: 1e300, atMost: .seconds(1)) == .seconds(1))
        var exponential = RetryPolicy(
            backoff: .exponential(initial: .zero, multiplier: 100, maximum: .seconds(30), attempts: 1000), jitter: 0.5)
        #expect(exponential.delay(afterAttempt: 999, random: .nan) == .seconds(30))
        exponential.backoff = .exponential(initial: .seconds(1), multiplier: 100, maximum: .seconds(30), attempts: 1000)
        #expect(exponential.delay(afterAttempt: 500, random: 1) == .seconds(45))
        #expect(SignatureVerifier.unixSeconds("1700000000") == 1_700_000_000)
        #expect(SignatureVerifier.unixSeconds("1700000000123") == 1_700_000_000)
        #expect(SignatureVerifier.unixSeconds("1700000000.25") == 1_700_000_000)
        for hostile in ["nan", "inf", "1e300", "-1", "99999999999999999999", "", " ", "+1", "1.", ".5", "1e9"] {
            #expect(SignatureVerifier.unixSeconds(hostile) == nil, "'\(hostile)'")
        }
    }

    @Test("hostile numbers in sources.yaml are configuration errors naming the key, never a crash")
    func hostileConfigNumbers() {
        let fields = [
            ("storage.retention", "storage:\n  retention: 1e300d"),
            ("storage.retention", "storage:\n  retention: 99999999999999999999d"),
            ("storage.max_size", "storage:\n  max_size: 1e300GB"),
            ("storage.max_size", "storage:\n  max_size: nanGB"),
            ("storage.max_size", "storage:\n  max_size: 99999999999999999999"),
            ("server.shutdown_grace", "server:\n  shutdown_grace: infs"),
            ("server.read_timeout", "server:\n  read_timeout: -1s"),
            ("defaults.timeout", "defaults:\n  timeout: 0x1p60s"),
            ("defaults.max_retry_after", "defaults:\n  max_retry_after: nan"),
            ("defaults.max_retry_after", "defaults:\n  max_retry_after: 500ms"),
            ("defaults.retry.jitter", "defaults:\n  retry: { jitter: nan }"),
            ("defaults.retry.exponential.multiplier", "defaults:\n  retry: { exponential: { multiplier: inf } }"),
            ("defaults.retry.schedule[0]", "defaults:\n  retry: { schedule: [1e300d] }"),
            ("defaults.max_concurrency", "defaults:\n  max_concurrency: 99999999999999999999"),
        ]
        for (key, section) in fields {
            let yaml =
                section
                + "\ndestinations:\n  out: { formatter: generic, url: \"http://127.0.0.1:9/x\" }\nsources:\n  a: { destinations: [out] }\n"
            do {
                _ = try ConfigLoader(environment: [:]).load(yaml: yaml, file: "/s.yaml")
                Issue.record("\(section) was accepted")
            } catch {
                #expect(error.problems.contains { $0.key == key }, "\(section): \(error.description)")
            }
        }
    }
}
