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
        // One byte every 300 ms: never idle long enough for the idle timeout, far too slow to finish.
        let trickle = Task {
            for _ in 0..<20 {
                try await Task.sleep(for: .milliseconds(300))
                if await !slow.send(" ") { return }
            }
        }
        let normal = try await server.post("app", json: #"{"normal":true}"#)
        #expect(normal.status == 202)
        let answer = await slow.readAll(timeout: .seconds(5))
        trickle.cancel()
        // Cut off: answered 408 by the read deadline, or (on a starved machine) closed by the idle timeout.
        #expect(answer.isEmpty || answer.hasPrefix("HTTP/1.1 408"), "got: \(answer.prefix(80))")
        #expect(ContinuousClock.now - started < .seconds(4))
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
        // readAll returns when the server closes the connection.
        _ = await loris.readAll(timeout: .seconds(6))
        #expect(ContinuousClock.now - started < .seconds(5), "the half-open request was held past its timeout")
        let sentMore = await loris.send("X-More: 1\r\n\r\n")
        let afterwards = await loris.readAll(timeout: .seconds(1))
        #expect(!sentMore || afterwards.isEmpty, "the connection still answered: \(afterwards.prefix(60))")
        #expect(try await server.post("app", json: "{}").status == 202)
        loris.close()
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
