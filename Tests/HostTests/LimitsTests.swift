import Foundation
import NIOCore
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
        // A window far longer than a loaded machine takes for three requests (a 10 s one refilled in a CI run).
        let server = try await Self.start(server: "", source: ", rate_limit: 2/1h", sink: sink)
        #expect(try await rawPost(port: server.ingestPort, from: "127.0.0.1", path: "/webhooks/app", body: "{}") == 202)
        #expect(try await rawPost(port: server.ingestPort, from: "127.0.0.1", path: "/webhooks/app", body: "{}") == 202)
        let limited = try await server.post("app", json: "{}")
        #expect(limited.status == 429)
        let retryAfter = try #require(Int(limited.header("Retry-After") ?? ""))
        #expect((1...3600).contains(retryAfter))
        #expect(limited.json?["error"] == "rate_limited")
        try await waitUntil("two deliveries") { sink.requests("/out").count == 2 }
        #expect(try await server.store.queueDepths()["out"]?[.delivered] == nil)
        try await server.stop()
        try await sink.stop()
    }

    @Test("an outsider without the secret cannot spend a verified source's rate limit: its failures count against its own address")
    func unverifiedBudget() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await Self.start(
            server: "  rate_limit_unverified: 3/1m", source: #", rate_limit: 2/1m, verify: { preset: github, secret: "s3cret" }"#,
            sink: sink)
        // The outsider, at 127.0.0.2: three failures are 401, then its address is refused before its body is read.
        var outsider: [Int] = []
        for _ in 0..<6 { outsider.append(try await rawPost(port: server.ingestPort, from: "127.0.0.2", path: "/webhooks/app", body: "{}")) }
        #expect(outsider == [401, 401, 401, 429, 429, 429])
        // The sender, at 127.0.0.1, still has its whole rate_limit: two accepted, then its own 429.
        func signed(_ n: Int) async throws -> TestResponse {
            let body = #"{"n":\#(n)}"#
            return try await server.post(
                "app", json: body, headers: [("X-Hub-Signature-256", githubSignature(secret: "s3cret", body: Array(body.utf8)))])
        }
        #expect(try await signed(1).status == 202)
        #expect(try await signed(2).status == 202)
        let limited = try await signed(3)
        #expect(limited.status == 429)
        #expect(limited.json?["detail"]?.stringValue?.contains("source 'app' is over its rate limit") == true)
        // The sender's own failures count against its address, not against the source: it is refused after three too.
        for _ in 0..<3 { #expect(try await server.post("app", json: "{}").status == 401) }
        let refused = try await server.post("app", json: "{}")
        #expect(refused.status == 429)
        #expect(refused.json?["detail"]?.stringValue?.contains("failed signature verification") == true)
        #expect(Int(refused.header("Retry-After") ?? "").map { (1...60).contains($0) } == true)
        try await waitUntil("two deliveries") { sink.requests("/out").count == 2 }
        try await server.stop()
        try await sink.stop()
    }

    @Test("behind server.trusted_proxies, the client is the right-most X-Forwarded-For address that is not a trusted proxy")
    func trustedProxies() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await Self.start(
            server: "  rate_limit_unverified: 2/1m\n  trusted_proxies: [127.0.0.1, 10.0.0.0/8]",
            source: #", verify: { preset: github, secret: "s3cret" }"#, sink: sink)
        func status(_ forwardedFor: String?) async throws -> Int {
            try await server.post("app", json: "{}", headers: forwardedFor.map { [("X-Forwarded-For", $0)] } ?? []).status
        }
        #expect(try await status("198.51.100.7") == 401)
        #expect(try await status("198.51.100.7, 10.1.2.3") == 401)
        // 198.51.100.7 has spent its two; a proxy hop that is trusted does not hide it.
        #expect(try await status("198.51.100.7, 10.9.9.9") == 429)
        #expect(try await status("198.51.100.7") == 429)
        // A client cannot pick its address by writing one in front: the nearest untrusted hop is what counts.
        #expect(try await status("198.51.100.7, 203.0.113.9") == 401)
        #expect(try await status("198.51.100.8") == 401)
        // Without a (valid) header, the proxy's own address is the client.
        #expect(try await status(nil) == 401)
        #expect(try await status("not-an-address") == 401)
        #expect(try await status(nil) == 429)
        // A peer that is not trusted is counted by its own address, whatever it writes.
        #expect(
            try await rawPost(
                port: server.ingestPort, from: "127.0.0.3", path: "/webhooks/app", body: "{}",
                headers: [("X-Forwarded-For", "198.51.100.99")]) == 401)
        try await server.stop()
        try await sink.stop()
    }

    @Test("client addresses: IPv4, IPv4-mapped IPv6 and IPv6 by its /64; networks match by prefix")
    func clientAddresses() throws {
        let v4 = try SocketAddress(ipAddress: "192.0.2.7", port: 1)
        #expect(ClientAddress.key(peer: v4, forwardedFor: [], trusted: []) == "192.0.2.7")
        let mapped = try SocketAddress(ipAddress: "::ffff:192.0.2.7", port: 1)
        #expect(ClientAddress.key(peer: mapped, forwardedFor: [], trusted: []) == "192.0.2.7")
        let v6 = try SocketAddress(ipAddress: "2001:db8:1:2:3:4:5:6", port: 1)
        #expect(ClientAddress.key(peer: v6, forwardedFor: [], trusted: []) == "2001:db8:1:2::/64")
        let proxy = try #require(IPNetwork("192.0.2.0/24"))
        #expect(ClientAddress.key(peer: v4, forwardedFor: ["2001:db8::1, [2001:db8:9::1]"], trusted: [proxy]) == "2001:db8:9:0::/64")
        #expect(IPNetwork("10.0.0.0/33") == nil)
        #expect(IPNetwork("10.0.0.0/") == nil)
        #expect(IPNetwork("fd00::/8")?.contains(IPNetwork.bytes(of: "fdff::1") ?? []) == true)
        #expect(IPNetwork("fd00::/8")?.contains(IPNetwork.bytes(of: "fe00::1") ?? []) == false)
        #expect(IPNetwork("10.0.0.0/7")?.contains(IPNetwork.bytes(of: "11.255.0.1") ?? []) == true)
        #expect(IPNetwork("0.0.0.0/0")?.contains(IPNetwork.bytes(of: "8.8.8.8") ?? []) == true)
        // The table of failing addresses stays bounded whatever the number of addresses.
        var windows = ClientWindows(capacity: 100)
        let limit = RateLimit(requests: 3, per: .seconds(60))
        for index in 0..<10_000 { windows.record("client-\(index)", limit: limit, now: Int64(index)) }
        #expect(windows.count <= 100)
        #expect(windows.wait("client-9999", limit: limit, now: 10_000) == nil)
        for _ in 0..<5 { windows.record("client-9999", limit: limit, now: 10_000) }
        #expect(windows.wait("client-9999", limit: limit, now: 10_000) == 60)
    }

    @Test("one client address gets max_concurrent_per_client slots; others are still served")
    func perClientShare() async throws {
        let sink = RecordingSink()
        try await sink.start()
        // A long read_timeout: the held requests must not time out while a loaded machine runs the rest of the test.
        let server = try await Self.start(server: "  max_concurrent_per_client: 2\n  read_timeout: 60s", sink: sink)
        let body = #"{"slow":true}"#
        let slow = try (0..<2).map { _ in try RawClient(port: server.ingestPort, from: "127.0.0.2") }
        for client in slow {
            await client.send(
                "POST /webhooks/app HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n{"
            )
        }
        func ingestState() async throws -> JSONValue? { try await send(.GET, "\(server.adminURL)/admin/sources").json?["ingest"] }
        try await waitUntil("both slow requests in progress") { try await ingestState()?["requests_in_progress"] == 2 }
        #expect(try await rawPost(port: server.ingestPort, from: "127.0.0.2", path: "/webhooks/app", body: "{}") == 503)
        #expect(try await ingestState()?["requests_shed_per_client"] == 1)
        #expect(try await rawPost(port: server.ingestPort, from: "127.0.0.1", path: "/webhooks/app", body: #"{"other":true}"#) == 202)
        for client in slow { await client.send(String(body.dropFirst())) }
        for client in slow {
            let answer = await client.readAll(timeout: .seconds(5))
            #expect(answer.hasPrefix("HTTP/1.1 202"), "got: \(answer.prefix(80))")
            client.close()
        }
        #expect(try await rawPost(port: server.ingestPort, from: "127.0.0.2", path: "/webhooks/app", body: "{}") == 202)
        try await server.stop()
        try await sink.stop()
    }

    @Test("a request whose body does not start within first_byte_timeout loses its connection and its slot")
    func firstByteDeadline() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await Self.start(server: "  read_timeout: 30s\n  first_byte_timeout: 1s", sink: sink)
        let silent = try RawClient(port: server.ingestPort)
        await silent.send("POST /webhooks/app HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n")
        let started = ContinuousClock.now
        // readAll returns when the server closes the connection; the idle timeout alone would take 60 s.
        _ = await silent.readAll(timeout: .seconds(40))
        let held = ContinuousClock.now - started
        // The bound is loose for a loaded machine (the whole suite runs at once on two cores).
        #expect(held >= .milliseconds(900), "closed before the deadline: \(held)")
        #expect(held < .seconds(20), "the silent request held its connection for \(held)")
        silent.close()
        let ingest = try await send(.GET, "\(server.adminURL)/admin/sources").json?["ingest"]
        #expect(ingest?["first_byte_timeouts"] == 1)
        try await waitUntil("the slot freed") {
            try await send(.GET, "\(server.adminURL)/admin/sources").json?["ingest"]?["requests_in_progress"] == 0
        }
        #expect(try await rawPost(port: server.ingestPort, from: "127.0.0.1", path: "/webhooks/app", body: "{}") == 202)
        try await server.stop()
        try await sink.stop()
    }

    @Test("the per-client settings are checked at load, naming the key")
    func perClientSettings() {
        func problems(_ server: String) -> [String] {
            let yaml = "server:\n" + server + "\n" + ConfigTests.minimal
            do {
                _ = try ConfigLoader(environment: [:]).load(yaml: yaml, file: "/s.yaml")
                return []
            } catch {
                return error.problems.map(\.description)
            }
        }
        #expect(
            problems("  first_byte_timeout: 20s") == [
                "/s.yaml:2: server.first_byte_timeout: must be more than 0 and at most server.read_timeout (10s)"
            ])
        #expect(problems("  first_byte_timeout: 2s\n  read_timeout: 3s").isEmpty)
        #expect(
            problems("  trusted_proxies: [10.0.0.0/40]") == [
                "/s.yaml:2: server.trusted_proxies[0]: must be an IP address or network such as 10.0.0.0/8, not '10.0.0.0/40'"
            ])
        #expect(problems("  trusted_proxies: 10.0.0.1").count == 1)
        #expect(problems("  rate_limit_unverified: lots").count == 1)
        #expect(problems("  max_concurrent_per_client: 0").count == 1)
        #expect(
            problems("  rate_limit_unverified: 5/10s\n  max_concurrent_per_client: 16\n  trusted_proxies: [\"::1\", 172.16.0.0/12]").isEmpty
        )
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
        // One byte every 300 ms for 30 s: never idle long enough for the idle timeout, far too slow to finish.
        let trickle = Task {
            for _ in 0..<100 {
                try await Task.sleep(for: .milliseconds(300))
                if await !slow.send(" ") { return }
            }
        }
        // A fresh connection each time in these tests: with read_timeout 1 s the server closes a pooled one after 2 s idle.
        #expect(try await rawPost(port: server.ingestPort, from: "127.0.0.1", path: "/webhooks/app", body: #"{"normal":true}"#) == 202)
        let answer = await slow.readAll(timeout: .seconds(28))
        trickle.cancel()
        // Cut off: answered 408 by the read deadline, or (on a starved machine) closed by the idle timeout. The bound is
        // loose because the whole suite runs at once on two cores; without a deadline the connection would last 30 s.
        #expect(answer.isEmpty || answer.hasPrefix("HTTP/1.1 408"), "got: \(answer.prefix(80))")
        #expect(ContinuousClock.now - started < .seconds(20))
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
        _ = await loris.readAll(timeout: .seconds(25))
        #expect(ContinuousClock.now - started < .seconds(20), "the half-open request was held past its timeout")
        let sentMore = await loris.send("X-More: 1\r\n\r\n")
        let afterwards = await loris.readAll(timeout: .seconds(1))
        #expect(!sentMore || afterwards.isEmpty, "the connection still answered: \(afterwards.prefix(60))")
        #expect(try await rawPost(port: server.ingestPort, from: "127.0.0.1", path: "/webhooks/app", body: "{}") == 202)
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
        #expect(try await rawPost(port: server.ingestPort, from: "127.0.0.1", path: "/webhooks/app", body: "{}") == 202)
        // Untouched, the trickle lasts 28 s (and readAll gives up at 25 s); the idle timeout is 2 s (the bound is loose for a loaded machine).
        _ = await loris.readAll(timeout: .seconds(25))
        let cutAfter = ContinuousClock.now - started
        trickle.cancel()
        #expect(cutAfter >= .milliseconds(1500), "closed before the idle limit: \(cutAfter)")
        #expect(cutAfter < .seconds(20), "the trickling client held its connection for \(cutAfter)")
        #expect(try await rawPost(port: server.ingestPort, from: "127.0.0.1", path: "/webhooks/app", body: "{}") == 202)
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
        #expect(try await rawPost(port: server.ingestPort, from: "127.0.0.1", path: "/webhooks/app", body: #"{"after":true}"#) == 202)
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
        #expect(try await rawPost(port: server.ingestPort, from: "127.0.0.1", path: "/webhooks/app", body: "{}") == 202)
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
