import Foundation
import PluginKit
import Testing

@testable import Host

/// Hostile and excessive clients are cut off within the configured limits while normal clients keep being served.
@Suite("Ingest limits")
struct LimitsTests {
    static func start(server settings: String, source: String = "", sink: RecordingSink) async throws -> TestServer {
        let yaml =
            testServerSection().replacingOccurrences(of: "  listen: \"127.0.0.1:0\"", with: "  listen: \"127.0.0.1:0\"\n" + settings) + """
                destinations:
                  out: { formatter: generic, url: "\(sink.url)/out" }
                sources:
                  app: { destinations: [out] \(source) }
                """
        return try await TestServer.start(yaml: yaml)
    }

    @Test("a source over its rate limit gets 429 with Retry-After before its body is read")
    func sourceRateLimit() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await Self.start(server: "", source: ", rate_limit: 2/10s", sink: sink)
        #expect(try await server.post("app", json: "{}").status == 202)
        #expect(try await server.post("app", json: "{}").status == 202)
        let limited = try await server.post("app", json: "{}")
        #expect(limited.status == 429)
        let retryAfter = try #require(Int(limited.header("Retry-After") ?? ""))
        #expect((1...10).contains(retryAfter))
        #expect(limited.json?["error"] == "rate_limited")
        try await waitUntil("two deliveries") { sink.requests("/out").count == 2 }
        #expect(try await server.store.queueDepths()["out"]?[.delivered] == nil)
        try await server.stop()
        try await sink.stop()
    }

    @Test("the source rate limit is a sliding window: slots free exactly as old requests leave it")
    func rateLimitWindow() {
        let limits = IngestLimits()
        let limit = RateLimit(requests: 2, per: .seconds(10))
        #expect(limits.admit(source: "s", limit: limit, now: 0) == nil)
        #expect(limits.admit(source: "s", limit: limit, now: 4000) == nil)
        #expect(limits.admit(source: "s", limit: limit, now: 5000) == 5)
        #expect(limits.admit(source: "other", limit: limit, now: 5000) == nil)
        #expect(limits.admit(source: "s", limit: limit, now: 10_001) == nil)
        #expect(limits.admit(source: "s", limit: limit, now: 10_002) == 4)
    }

    @Test("a body trickling in byte by byte is cut off with 408 after read_timeout while normal clients are served")
    func slowBody() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await Self.start(server: "  read_timeout: 1s", sink: sink)
        let slow = try RawClient(port: server.ingestPort)
        await slow.send("POST /webhooks/app HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        let started = ContinuousClock.now
        // One byte every 300 ms for 15 s: never idle long enough for the idle timeout, far too slow to finish.
        let trickle = Task {
            for _ in 0..<50 {
                try await Task.sleep(for: .milliseconds(300))
                if await !slow.send(" ") { return }
            }
        }
        let normal = try await server.post("app", json: #"{"normal":true}"#)
        #expect(normal.status == 202)
        let answer = await slow.readAll(timeout: .seconds(15))
        trickle.cancel()
        // Cut off: answered 408 by the read deadline, or (on a starved machine) closed by the idle timeout. The bound is
        // loose because the whole suite runs at once on two cores; without a deadline the connection would last 15 s.
        #expect(answer.isEmpty || answer.hasPrefix("HTTP/1.1 408"), "got: \(answer.prefix(80))")
        #expect(ContinuousClock.now - started < .seconds(12))
        slow.close()
        #expect(try await server.store.queueDepths()["out"]?.values.reduce(0, +) ?? 0 <= 1)
        try await server.stop()
        try await sink.stop()
    }

    @Test("an idle connection that sends half its headers is closed after read_timeout")
    func slowHeaders() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await Self.start(server: "  read_timeout: 1s", sink: sink)
        let loris = try RawClient(port: server.ingestPort)
        await loris.send("POST /webhooks/app HTTP/1.1\r\nHost: x\r\n")
        let started = ContinuousClock.now
        // readAll returns when the server closes the connection (the idle timeout is 2 s; the bound is loose for a loaded machine).
        _ = await loris.readAll(timeout: .seconds(15))
        #expect(ContinuousClock.now - started < .seconds(12), "the half-open request was held past its timeout")
        let sentMore = await loris.send("X-More: 1\r\n\r\n")
        let afterwards = await loris.readAll(timeout: .seconds(1))
        #expect(!sentMore || afterwards.isEmpty, "the connection still answered: \(afterwards.prefix(60))")
        #expect(try await server.post("app", json: "{}").status == 202)
        loris.close()
        try await server.stop()
        try await sink.stop()
    }

    @Test("headers trickled a byte at a time cannot hold a connection past twice read_timeout")
    func tricklingHeaders() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await Self.start(server: "  read_timeout: 1s", sink: sink)
        let loris = try RawClient(port: server.ingestPort)
        let started = ContinuousClock.now
        // A byte every 200 ms: the connection is never silent for long, but its request head never completes. Partial
        // bytes do not count as activity; only a whole head (or body part) does.
        let trickle = Task {
            for byte in "POST /webhooks/app HTTP/1.1\r\nHost: x\r\nX-Slow: " + String(repeating: "a", count: 100) {
                if await !loris.send(String(byte)) { return }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        #expect(try await server.post("app", json: "{}").status == 202)
        // Untouched, the trickle lasts 28 s; the idle timeout is 2 s (the bound is loose for a loaded machine).
        _ = await loris.readAll(timeout: .seconds(15))
        let cutAfter = ContinuousClock.now - started
        trickle.cancel()
        #expect(cutAfter >= .milliseconds(1500), "closed before the idle limit: \(cutAfter)")
        #expect(cutAfter < .seconds(12), "the trickling client held its connection for \(cutAfter)")
        #expect(try await server.post("app", json: "{}").status == 202)
        loris.close()
        try await server.stop()
        try await sink.stop()
    }

    @Test("with max_concurrent_requests in progress, a further request is shed with 503 and nothing of it is stored")
    func loadShedding() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await Self.start(server: "  read_timeout: 10s\n  max_concurrent_requests: 2", sink: sink)
        // Two slow senders hold both slots: their heads are in, their bodies are not.
        let body = #"{"slow":true,"padding":"\#(String(repeating: "x", count: 20))"}"#
        let slow = try (0..<2).map { _ in try RawClient(port: server.ingestPort) }
        for client in slow {
            await client.send(
                "POST /webhooks/app HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n{"
            )
        }
        func ingestState() async throws -> JSONValue? { try await send(.GET, "\(server.adminURL)/admin/sources").json?["ingest"] }
        try await waitUntil("both slow requests in progress") { try await ingestState()?["requests_in_progress"] == 2 }

        let shed = try await server.post("app", json: #"{"shed":true}"#)
        #expect(shed.status == 503)
        #expect(shed.json?["error"] == "overloaded")
        #expect(shed.header("Retry-After") == "1")
        #expect(try await ingestState()?["requests_shed"] == 1)

        // The held requests complete normally, and the slots free.
        for client in slow { await client.send(String(body.dropFirst())) }
        for client in slow {
            let answer = await client.readAll(timeout: .seconds(5))
            #expect(answer.hasPrefix("HTTP/1.1 202"), "got: \(answer.prefix(80))")
            client.close()
        }
        try await waitUntil("the slots freed") { try await ingestState()?["requests_in_progress"] == 0 }
        #expect(try await server.post("app", json: #"{"after":true}"#).status == 202)
        try await waitUntil("three deliveries") { sink.requests("/out").count == 3 }
        let bodies = sink.requests("/out").map { String(decoding: $0.body, as: UTF8.self) }
        #expect(!bodies.contains { $0.contains("shed") })
        try await server.stop()
        try await sink.stop()
    }

    @Test("too many headers or oversized headers are refused and the server stays responsive")
    func headerLimits() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await Self.start(server: "  max_headers: 50\n  max_header_bytes: 4096", sink: sink)
        let many = (0..<80).map { ("X-Filler-\($0)", "v") }
        let tooMany = try? await send(.POST, "\(server.ingestURL)/webhooks/app", body: Array("{}".utf8), headers: many)
        #expect(tooMany == nil || (400..<500).contains(tooMany!.status))
        let huge = try? await send(
            .POST, "\(server.ingestURL)/webhooks/app", body: Array("{}".utf8), headers: [("X-Huge", String(repeating: "a", count: 8000))])
        #expect(huge == nil || (400..<500).contains(huge!.status))
        #expect(try await server.store.queueDepths().isEmpty)
        #expect(try await server.post("app", json: "{}").status == 202)
        try await server.stop()
        try await sink.stop()
    }

    @Test("a body streamed without Content-Length is refused with 413 once it passes the limit")
    func streamedBodyLimit() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await Self.start(server: "  max_body_bytes: 1024", sink: sink)
        let client = try RawClient(port: server.ingestPort)
        await client.send("POST /webhooks/app HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in 0..<4 { await client.send("200\r\n" + String(repeating: "a", count: 512) + "\r\n") }
        let answer = await client.readAll(timeout: .seconds(3))
        #expect(answer.hasPrefix("HTTP/1.1 413"), "got: \(answer.prefix(80))")
        client.close()
        #expect(try await server.store.queueDepths().isEmpty)
        try await server.stop()
        try await sink.stop()
    }
}
