import Foundation
import PluginKit
import Testing

@testable import Host

/// The operator's admin API on a real server with real stored events: listings, replay by filter, plugins, the
/// redacted configuration, reload under load, metrics and alerts.
@Suite("Admin API")
struct AdminAPITests {
    /// Two sources and three destinations; `/broken` answers 400, so its deliveries go dead at once.
    static func yaml(sink: String, extra: String = "") -> String {
        testServerSection()
            + """
            destinations:
              out: { formatter: generic, url: "\(sink)/out" }
              broken: { formatter: generic, url: "\(sink)/broken", headers: { Authorization: "Bearer dest-credential-9" } }
              alerts: { formatter: generic, url: "\(sink)/alerts" }
            sources:
              app: { destinations: [out, broken], verify: { preset: github, secret: "verify-secret-7" } }
              plain: { destinations: [out] }
              locked: { destinations: [broken], replay: false }
            \(extra)
            """
    }

    static func post(_ server: TestServer, _ source: String, _ json: String) async throws -> String {
        let body = Array(json.utf8)
        var headers: [(String, String)] = []
        if source == "app" {
            headers.append(("X-Hub-Signature-256", githubSignature(secret: "verify-secret-7", body: body)))
        }
        let response = try await server.post(source, json: json, headers: headers)
        #expect(response.status == 202, "\(String(decoding: response.body, as: UTF8.self))")
        return try #require(response.json?["id"]?.stringValue)
    }

    static func get(_ server: TestServer, _ path: String) async throws -> TestResponse {
        try await send(.GET, server.adminURL + path)
    }

    @Test("events and deliveries list newest first with filters and cursors; bad filters are 400 naming the parameter")
    func listings() async throws {
        let sink = RecordingSink()
        sink.plan("/broken", statuses: Array(repeating: 400, count: 10))
        try await sink.start()
        let server = try await TestServer.start(yaml: Self.yaml(sink: sink.url))
        var appIDs: [String] = []
        for index in 0..<3 { appIDs.append(try await Self.post(server, "app", #"{"n":\#(index)}"#)) }
        let plainID = try await Self.post(server, "plain", "{}")
        for id in appIDs { try await server.waitForDeliveries(of: id, toBe: [.delivered, .dead]) }
        try await server.waitForDeliveries(of: plainID)

        let all = try await Self.get(server, "/admin/events")
        #expect(all.status == 200)
        let ids = all.json?["events"]?.arrayValue?.compactMap { $0["id"]?.stringValue } ?? []
        #expect(ids == [plainID] + appIDs.reversed())
        #expect(all.json?["next_cursor"] == .null)

        // Two at a time: the cursor continues exactly where the page ended.
        let first = try await Self.get(server, "/admin/events?limit=2")
        let cursor = try #require(first.json?["next_cursor"]?.stringValue)
        let second = try await Self.get(server, "/admin/events?limit=2&cursor=\(cursor)")
        let paged = (first.json?["events"]?.arrayValue ?? []) + (second.json?["events"]?.arrayValue ?? [])
        #expect(paged.compactMap { $0["id"]?.stringValue } == ids)
        #expect(second.json?["next_cursor"] == .null)

        let bySource = try await Self.get(server, "/admin/events?source=plain")
        #expect(bySource.json?["events"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == [plainID])
        let withDead = try await Self.get(server, "/admin/events?status=dead")
        #expect(withDead.json?["events"]?.arrayValue?.count == 3)
        let deliveries = try await Self.get(server, "/admin/deliveries?status=dead&destination=broken")
        let dead = deliveries.json?["deliveries"]?.arrayValue ?? []
        #expect(dead.count == 3)
        #expect(dead.allSatisfy { $0["status"] == "dead" && $0["source"] == "app" && $0["last_error"] == "destination answered HTTP 400" })
        let future = Clock.rfc3339(milliseconds: Clock.milliseconds() + 60_000)
        #expect(try await Self.get(server, "/admin/deliveries?since=\(future)").json?["deliveries"]?.arrayValue?.isEmpty == true)

        let badStatus = try await Self.get(server, "/admin/events?status=gone")
        #expect(badStatus.status == 400)
        #expect(badStatus.json?["error"] == "invalid_parameter")
        #expect(badStatus.json?["detail"]?.stringValue?.contains("'status'") == true)
        #expect(try await Self.get(server, "/admin/deliveries?sinse=2026-01-01T00:00:00Z").status == 400)
        #expect(try await Self.get(server, "/admin/events?since=yesterday").status == 400)
        #expect(try await Self.get(server, "/admin/events?limit=0").status == 400)
        try await server.stop()
        try await sink.stop()
    }

    @Test("replay by filter schedules exactly the matching finished deliveries, counts on a dry run, and honours replay: false")
    func replayByFilter() async throws {
        let sink = RecordingSink()
        sink.plan("/broken", statuses: Array(repeating: 400, count: 4))
        try await sink.start()
        let server = try await TestServer.start(yaml: Self.yaml(sink: sink.url))
        var ids: [String] = []
        for index in 0..<3 { ids.append(try await Self.post(server, "app", #"{"n":\#(index)}"#)) }
        let lockedID = try await Self.post(server, "locked", "{}")
        for id in ids + [lockedID] { try await server.waitForDeliveries(of: id, toBe: [.delivered, .dead]) }

        func replay(_ body: String) async throws -> TestResponse {
            try await send(
                .POST, server.adminURL + "/admin/replay", body: Array(body.utf8), headers: [("Content-Type", "application/json")])
        }
        let dry = try await replay(#"{"status":"dead","dry_run":true}"#)
        #expect(dry.status == 200)
        #expect(dry.json?["matched"] == 4)
        #expect(dry.json?["scheduled"] == 0)
        #expect(dry.json?["by_destination"] == ["broken": 3])
        #expect(dry.json?["skipped"]?["replay_disabled"] == 1)
        #expect(sink.requests("/broken").count == 4, "a dry run sent something")

        // The destination is fixed: the default answer is 200 again. Only the three dead app deliveries are replayed.
        let done = try await replay(#"{"status":"dead","destination":"broken","source":"app"}"#)
        #expect(done.status == 202)
        #expect(done.json?["scheduled"] == 3)
        for id in ids { try await server.waitForDeliveries(of: id, toBe: [.delivered, .dead]) }
        try await waitUntil("no delivery left dead for app") {
            try await Self.get(server, "/admin/deliveries?status=dead&source=app").json?["deliveries"]?.arrayValue?.isEmpty == true
        }
        #expect(sink.requests("/broken").count == 7)
        for id in ids {
            let detail = try #require(try await server.detail(id))
            let broken = detail.deliveries.filter { $0.destination == "broken" }
            #expect(broken.map(\.status) == [.dead, .delivered])
            #expect(broken.last?.replayOf == broken.first?.id)
        }
        // Nothing else was sent: out got one delivery per event and no replay.
        #expect(sink.requests("/out").count == 3)
        // Replaying the same filter again matches nothing: the dead deliveries were superseded.
        #expect(try await replay(#"{"status":"dead","source":"app"}"#).json?["matched"] == 0)

        let refused = try await replay(#"{"source":"locked"}"#)
        #expect(refused.status == 403)
        #expect(refused.json?["error"] == "replay_disabled")
        #expect(try await replay("{}").status == 400)
        #expect(try await replay(#"{"statuss":"dead"}"#).json?["error"] == "invalid_parameter")
        #expect(try await replay("not json").status == 400)
        try await server.stop()
        try await sink.stop()
    }

    @Test("plugins and the running configuration, with every secret redacted")
    func pluginsAndConfig() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await TestServer.start(
            yaml: Self.yaml(sink: sink.url)
                .replacingOccurrences(
                    of: "  admin_listen: \"127.0.0.1:0\"", with: "  admin_listen: \"127.0.0.1:0\"\n  admin_token: \"admin-token-3\""))
        let auth = [("Authorization", "Bearer admin-token-3")]
        let plugins = try await send(.GET, server.adminURL + "/admin/plugins", headers: auth)
        let names = plugins.json?["plugins"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
        #expect(names == ["discord", "generic", "github", "slack"])
        #expect(plugins.json?["plugins"]?.arrayValue?.first?["abi_version"] == 1)

        let config = try await send(.GET, server.adminURL + "/admin/config", headers: auth)
        #expect(config.status == 200)
        let text = String(decoding: config.body, as: UTF8.self)
        for secret in ["admin-token-3", "verify-secret-7", "dest-credential-9", "/broken", "/out"] {
            #expect(!text.contains(secret), "the config shows \(secret)")
        }
        #expect(config.json?["server"]?["admin_token"] == "<redacted>")
        #expect(config.json?["destinations"]?["broken"]?["headers"]?["Authorization"] == "<redacted>")
        #expect(config.json?["destinations"]?["out"]?["url"]?.stringValue?.hasSuffix("/<redacted>") == true)
        #expect(config.json?["sources"]?["app"]?["verify"]?["secrets"] == 1)
        #expect(try await send(.GET, server.adminURL + "/admin/config").status == 401)
        try await server.stop()
        try await sink.stop()
    }

    @Test("reload under concurrent ingest: no request fails, new events follow the new routing, an invalid file changes nothing")
    func reloadUnderLoad() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await TestServer.start(yaml: Self.yaml(sink: sink.url))
        let file = server.directory + "/sources.yaml"
        let failures = Collected()
        let accepted = Collected()
        let load = Task {
            await withTaskGroup(of: Void.self) { group in
                for client in 0..<4 {
                    group.addTask {
                        var index = 0
                        while !Task.isCancelled {
                            index += 1
                            let response = try? await server.post("plain", json: #"{"client":\#(client),"n":\#(index)}"#)
                            if let id = response?.json?["id"]?.stringValue { accepted.add(id) }
                            // The request cut short by the end of the test is not a failure.
                            if response?.status != 202, !Task.isCancelled {
                                failures.add("client \(client) request \(index): \(response?.status ?? 0)")
                            }
                        }
                    }
                }
            }
        }
        // Requests are accepted before, between and after the reloads.
        try await waitUntil("the load to run") { accepted.all.count >= 4 }
        // plain now also goes to alerts, and out gets a rate limit.
        let rerouted = Self.yaml(sink: sink.url)
            .replacingOccurrences(of: "plain: { destinations: [out] }", with: "plain: { destinations: [out, alerts] }")
            .replacingOccurrences(
                of: "out: { formatter: generic, url: \"\(sink.url)/out\" }",
                with: "out: { formatter: generic, url: \"\(sink.url)/out\", rate_limit: 1000/1s }")
        try rerouted.write(toFile: file, atomically: true, encoding: .utf8)
        let reloaded = try await adminPost(server.adminURL + "/admin/reload")
        #expect(reloaded.status == 200)
        #expect(reloaded.json?["status"] == "reloaded")
        #expect(reloaded.json?["restart_required"] == [])
        let afterFirst = accepted.all.count
        try await waitUntil("requests after the reload") { accepted.all.count >= afterFirst + 4 }
        // An invalid file: refused with the problem's line, the running configuration keeps serving.
        try (rerouted + "\n  broken-source: { destinations: [nowhere] }\n").write(toFile: file, atomically: true, encoding: .utf8)
        let refused = try await adminPost(server.adminURL + "/admin/reload")
        #expect(refused.status == 422)
        #expect(refused.json?["error"] == "invalid_config")
        #expect(refused.json?["detail"]?.stringValue?.contains("sources.yaml:") == true)
        let afterSecond = accepted.all.count
        try await waitUntil("requests after the refused reload") { accepted.all.count >= afterSecond + 4 }
        load.cancel()
        await load.value
        #expect(failures.all.isEmpty, "\(failures.all.prefix(5))")

        let after = try await Self.post(server, "plain", #"{"after":true}"#)
        try await server.waitForDeliveries(of: after)
        let detail = try #require(try await server.detail(after))
        #expect(Set(detail.deliveries.map(\.destination)) == ["out", "alerts"])
        // Settings read once at start are named, not applied: the in-flight journal's file among them.
        try rerouted.replacingOccurrences(
            of: "  url: \"sqlite:data/hookproxy.sqlite\"", with: "  url: \"sqlite:data/hookproxy.sqlite\"\n  journal: data/moved.inflight"
        ).write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try await adminPost(server.adminURL + "/admin/reload").json?["restart_required"] == ["storage.journal"])
        // Every event accepted around the reloads was delivered: nothing in flight was dropped.
        for id in accepted.all { try await server.waitForDeliveries(of: id) }
        // The destination's lane took its new settings.
        let destinations = try await Self.get(server, "/admin/destinations").json?["destinations"]?.arrayValue ?? []
        #expect(destinations.first { $0["name"] == "out" }?["rate_limit"] == "1000/1s")
        try await server.stop()
        try await sink.stop()
    }

    @Test("reload picks up a new plugin file, reports a refused one (and alerts about it); the new formatter is used at once")
    func reloadPlugins() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let extra = """
            plugins:
              directory: plugins
            alerts:
              destination: alerts
            """
        let server = try await TestServer.start(yaml: Self.yaml(sink: sink.url, extra: extra))
        let plugins = server.directory + "/plugins"
        try FileManager.default.createDirectory(atPath: plugins, withIntermediateDirectories: true)
        _ = try await compileCPlugin(into: plugins)
        _ = try await compileCPlugin(into: plugins, file: "libbroken.so", defines: ["NO_ENTRY"])
        let withMinimal = Self.yaml(sink: sink.url, extra: extra)
            .replacingOccurrences(of: "destinations:\n", with: "destinations:\n  c: { formatter: minimal, url: \"\(sink.url)/c\" }\n")
            .replacingOccurrences(of: "plain: { destinations: [out] }", with: "plain: { destinations: [c] }")
        try withMinimal.write(toFile: server.directory + "/sources.yaml", atomically: true, encoding: .utf8)
        let reloaded = try await adminPost(server.adminURL + "/admin/reload")
        #expect(reloaded.status == 200, "\(String(decoding: reloaded.body, as: UTF8.self))")
        #expect(reloaded.json?["plugins"]?.arrayValue?.contains("minimal") == true)
        #expect(reloaded.json?["refused_plugins"]?.arrayValue?.first?["file"]?.stringValue?.hasSuffix("libbroken.so") == true)
        let listed = try await Self.get(server, "/admin/plugins").json?["plugins"]?.arrayValue ?? []
        #expect(listed.contains { $0["name"] == "minimal" })

        let id = try await Self.post(server, "plain", #"{"via":"c"}"#)
        try await server.waitForDeliveries(of: id)
        #expect(sink.requests("/c").first.map { String(decoding: $0.body, as: UTF8.self).hasPrefix("minimal:") } == true)
        try await waitUntil("the plugin_refused alert") {
            sink.requests("/alerts").contains { ($0.json?["fields"]?["kind"] ?? $0.json?["kind"]) == "plugin_refused" }
        }
        try await server.stop()
        try await sink.stop()
    }

    @Test("a destination paused by an operator or by the file sends nothing and spends no attempts until resumed")
    func pauseAndResume() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let yaml = Self.yaml(sink: sink.url).replacingOccurrences(
            of: "  alerts: { formatter: generic, url: \"\(sink.url)/alerts\" }",
            with: "  alerts: { formatter: generic, url: \"\(sink.url)/alerts\", paused: true }")
        let server = try await TestServer.start(yaml: yaml)
        func destination(_ name: String) async throws -> JSONValue? {
            try await Self.get(server, "/admin/destinations").json?["destinations"]?.arrayValue?.first { $0["name"] == .string(name) }
        }
        let paused = try await adminPost(server.adminURL + "/admin/destinations/out/pause")
        #expect(paused.status == 200)
        #expect(paused.json?["state"] == "suspended" && paused.json?["suspended_by"] == "operator")
        let id = try await Self.post(server, "plain", #"{"held":true}"#)
        // An observation window: nothing may be sent while suspended (the engine looks at least every 200 ms here).
        try await Task.sleep(for: .milliseconds(800))
        #expect(sink.requests("/out").isEmpty, "sent while suspended")
        let waiting = try #require(try await server.detail(id)?.deliveries.first)
        #expect(waiting.status == .pending && waiting.attempts == 0)
        #expect(try await destination("out")?["queue"]?["pending"] == 1)
        let metrics = try PrometheusText(try await Self.get(server, "/metrics"))
        #expect(metrics.value("hookproxy_destination_suspended", ["destination": "out"]) == 1)

        let resumed = try await adminPost(server.adminURL + "/admin/destinations/out/resume")
        #expect(resumed.json?["state"] == "healthy")
        try await server.waitForDeliveries(of: id)
        #expect(sink.requests("/out").count == 1)

        // Paused in the file: the API cannot resume it; a reload without `paused` does.
        #expect(try await destination("alerts")?["suspended_by"] == "config")
        let refused = try await adminPost(server.adminURL + "/admin/destinations/alerts/resume")
        #expect(refused.status == 409)
        #expect(refused.json?["error"] == "paused_in_config")
        #expect(try await adminPost(server.adminURL + "/admin/destinations/nope/pause").status == 404)
        try Self.yaml(sink: sink.url).write(toFile: server.directory + "/sources.yaml", atomically: true, encoding: .utf8)
        #expect(try await adminPost(server.adminURL + "/admin/reload").status == 200)
        #expect(try await destination("alerts")?["state"] == "healthy")
        try await server.stop()
        try await sink.stop()
    }

    @Test("deliveries claimed ahead of free slots go back to pending when the destination is paused, and go out on resume")
    func claimedAheadReleasedOnPause() async throws {
        let sink = RecordingSink()
        // Every answer is slow, so that eight sends hold all eight slots (the default max_concurrency) for seconds and the
        // engine claims more ahead. On a loaded machine the test's own requests can take longer than one answer: then
        // the next eight have started before the pause, and fewer than twelve are left to go back.
        sink.plan("/out", responses: Array(repeating: RecordingSink.Planned(status: 200, delay: .seconds(3)), count: 20))
        try await sink.start()
        let yaml = Self.yaml(sink: sink.url).replacingOccurrences(
            of: "out: { formatter: generic, url: \"\(sink.url)/out\" }",
            with: "out: { formatter: generic, url: \"\(sink.url)/out\", timeout: 30s }")
        #expect(yaml.contains("timeout: 30s"))
        let server = try await TestServer.start(yaml: yaml)
        func queue() async throws -> JSONValue? {
            try await Self.get(server, "/admin/destinations").json?["destinations"]?.arrayValue?.first { $0["name"] == "out" }?["queue"]
        }
        // Queued while paused, so that the first claim after resuming finds all twenty due.
        #expect(try await adminPost(server.adminURL + "/admin/destinations/out/pause").status == 200)
        var ids: [String] = []
        for index in 0..<20 { ids.append(try await Self.post(server, "plain", #"{"n":\#(index)}"#)) }
        #expect(try await adminPost(server.adminURL + "/admin/destinations/out/resume").status == 200)
        try await waitUntil("eight attempts in flight at the sink") { sink.requests("/out").count >= 8 }
        #expect((try await queue()?["in_flight"]?.intValue ?? 0) > 8, "eight sending and more claimed ahead")
        #expect(try await adminPost(server.adminURL + "/admin/destinations/out/pause").status == 200)
        // The slow attempts finish; what was claimed ahead must not stay in flight until its lease (5 minutes) runs out,
        // and nothing more is sent. The bound is loose for a loaded two-core machine, and far below the lease.
        var sent = 0
        var released = 0
        try await waitUntil("nothing in flight and the rest pending", timeout: .seconds(40)) {
            let depths = try await queue()
            sent = sink.requests("/out").count
            released = depths?["pending"]?.intValue ?? -1
            return depths?["in_flight"] == 0 && released == 20 - sent
        }
        #expect(sent <= 16 && released >= 4, "at most two rounds of eight were sent before the pause: \(sent) sent")
        try await Task.sleep(for: .milliseconds(500))
        #expect(sink.requests("/out").count == sent, "nothing is sent while paused")
        #expect(try await adminPost(server.adminURL + "/admin/destinations/out/resume").status == 200)
        for id in ids { try await server.waitForDeliveries(of: id) }
        #expect(sink.requests("/out").count == 20)
        try await server.stop()
        try await sink.stop()
    }

    @Test("deliveries claimed ahead are formatted while the lane's slots are busy sending, once each, and sent as formatted")
    func claimedAheadFormattedWhileWaiting() async throws {
        let sink = RecordingSink()
        // Eight slow answers hold all eight slots, so that twelve of the twenty wait, claimed ahead.
        sink.plan("/out", responses: Array(repeating: RecordingSink.Planned(status: 200, delay: .seconds(8)), count: 8))
        try await sink.start()
        let yaml = Self.yaml(sink: sink.url).replacingOccurrences(
            of: "out: { formatter: generic, url: \"\(sink.url)/out\" }",
            with: "out: { formatter: generic, url: \"\(sink.url)/out\", timeout: 30s }")
        #expect(yaml.contains("timeout: 30s"))
        let server = try await TestServer.start(yaml: yaml)
        /// Format calls made, and attempts answered, in one reading of /metrics.
        func counts() async throws -> (formatted: Double, answered: Double) {
            let metrics = try PrometheusText(try await Self.get(server, "/metrics"))
            return (
                metrics.value("hookproxy_plugin_format_duration_seconds_count", ["plugin": "generic"]) ?? 0,
                metrics.value("hookproxy_delivery_attempts_total", ["destination": "out", "outcome": "delivered"]) ?? 0
            )
        }
        #expect(try await adminPost(server.adminURL + "/admin/destinations/out/pause").status == 200)
        var ids: [String] = []
        for index in 0..<20 { ids.append(try await Self.post(server, "plain", #"{"n":\#(index)}"#)) }
        #expect(try await adminPost(server.adminURL + "/admin/destinations/out/resume").status == 200)
        // All twenty are formatted before any of the first eight is answered. Without formatting ahead, the other twelve
        // would start (and be formatted) only as answers free the slots.
        var answeredWhenAllFormatted: Double?
        try await waitUntil("twenty format calls") {
            let now = try await counts()
            if now.formatted == 20 { answeredWhenAllFormatted = now.answered }
            return now.formatted == 20
        }
        #expect(answeredWhenAllFormatted == 0, "formatted ahead while every slot was still waiting for its answer")
        #expect(sink.requests("/out").count <= 8, "formatted ahead, not sent ahead")
        for id in ids { try await server.waitForDeliveries(of: id) }
        // Each event's own body went out, once, and no delivery was formatted twice.
        let sent = sink.requests("/out").compactMap { try? JSONValue(parsing: $0.body)["n"]?.intValue }
        #expect(sent.sorted() == Array(0..<20))
        #expect(try await counts().formatted == 20)
        try await server.stop()
        try await sink.stop()
    }

    @Test("GET /metrics is Prometheus text whose counters move as events flow")
    func metrics() async throws {
        let sink = RecordingSink()
        sink.plan("/broken", statuses: [400])
        try await sink.start()
        let server = try await TestServer.start(yaml: Self.yaml(sink: sink.url))
        let before = try PrometheusText(try await Self.get(server, "/metrics"))
        let id = try await Self.post(server, "app", "{}")
        try await server.waitForDeliveries(of: id, toBe: [.delivered, .dead])
        #expect(try await server.post("nope", json: "{}").status == 404)
        let after = try PrometheusText(try await Self.get(server, "/metrics"))
        #expect(after.value("hookproxy_ingest_requests_total", ["source": "app", "status": "202"]) == 1)
        #expect(after.value("hookproxy_ingest_requests_total", ["source": "_unknown", "status": "404"]) == 1)
        #expect(before.value("hookproxy_ingest_requests_total", ["source": "app", "status": "202"]) == nil)
        #expect(after.value("hookproxy_delivery_attempts_total", ["destination": "out", "outcome": "delivered"]) == 1)
        #expect(after.value("hookproxy_delivery_attempts_total", ["destination": "broken", "outcome": "dead"]) == 1)
        #expect(after.value("hookproxy_deliveries", ["destination": "broken", "state": "dead"]) == 1)
        #expect(after.value("hookproxy_delivery_latency_seconds_count", ["destination": "out"]) == 1)
        #expect(after.value("hookproxy_delivery_attempt_duration_seconds_count", ["destination": "broken"]) == 1)
        #expect(after.value("hookproxy_plugin_format_duration_seconds_count", ["plugin": "generic"]) == 2)
        #expect(after.value("hookproxy_destination_circuit_state", ["destination": "out"]) == 0)
        #expect(after.types["hookproxy_delivery_latency_seconds"] == "histogram")
        #expect(after.types["hookproxy_ingest_requests_total"] == "counter")
        try await server.stop()
        try await sink.stop()
    }

    @Test("alerts: a dead delivery and a paused destination reach the alerts destination, and an outage is one message")
    func alerts() async throws {
        let sink = RecordingSink()
        sink.plan("/broken", statuses: Array(repeating: 400, count: 6))
        try await sink.start()
        let yaml = Self.yaml(
            sink: sink.url,
            extra: """
                alerts:
                  destination: alerts
                  rate_limit: 10/1h
                """
        )
        .replacingOccurrences(
            of: "  out: { formatter: generic, url: \"\(sink.url)/out\" }",
            with: "  out: { formatter: generic, url: \"http://127.0.0.1:9/out\", circuit_breaker: { failures: 2, cooldown: 1h } }")
        let server = try await TestServer.start(yaml: yaml)
        // Five events: five dead deliveries to broken, one alert for them (the others are held back).
        var ids: [String] = []
        for index in 0..<5 { ids.append(try await Self.post(server, "app", #"{"n":\#(index)}"#)) }
        try await waitUntil("the five deliveries to broken dead") {
            var dead = 0
            for id in ids {
                dead += try await server.detail(id)?.deliveries.filter { $0.destination == "broken" && $0.status == .dead }.count ?? 0
            }
            return dead == 5
        }
        try await waitUntil("the dead-delivery alert and the pause alert") {
            let kinds = sink.requests("/alerts").compactMap { $0.json?["fields"]?["kind"]?.stringValue ?? $0.json?["kind"]?.stringValue }
            return kinds.contains("delivery_dead") && kinds.contains("destination_paused")
        }
        // An observation window: the four held-back dead-delivery alerts must not arrive late.
        try await Task.sleep(for: .milliseconds(500))
        let alerts = sink.requests("/alerts").compactMap(\.json)
        let kinds = alerts.compactMap { $0["fields"]?["kind"]?.stringValue ?? $0["kind"]?.stringValue }
        #expect(kinds.filter { $0 == "delivery_dead" }.count == 1, "\(kinds)")
        #expect(kinds.filter { $0 == "destination_paused" }.count == 1, "\(kinds)")
        let stored = try await server.store.listEvents(RecordFilter(source: AlertsConfig.source), cursor: nil, limit: 50)
        #expect(stored.items.count == 2)
        try await server.stop()
        try await sink.stop()
    }
}

/// A Prometheus text exposition, parsed line by line: every sample must be `name{labels} value`, every `# TYPE` line
/// well formed, or parsing fails.
struct PrometheusText {
    struct Malformed: Error, CustomStringConvertible {
        let line: String
        var description: String { "not Prometheus text: \(line)" }
    }

    var samples: [(name: String, labels: [String: String], value: Double)] = []
    var types: [String: String] = [:]

    init(_ response: TestResponse) throws {
        #expect(response.status == 200)
        #expect(response.header("Content-Type")?.hasPrefix("text/plain") == true)
        for line in String(decoding: response.body, as: UTF8.self).split(separator: "\n").map(String.init) {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                guard parts.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3]) else {
                    throw Malformed(line: line)
                }
                types[String(parts[2])] = String(parts[3])
                continue
            }
            if line.hasPrefix("#") { continue }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                throw Malformed(line: line)
            }
            let series = line[..<space]
            var labels: [String: String] = [:]
            let name: String
            if let open = series.firstIndex(of: "{") {
                guard series.hasSuffix("}") else { throw Malformed(line: line) }
                name = String(series[..<open])
                let body = series[series.index(after: open)..<series.index(before: series.endIndex)]
                for pair in body.split(separator: ",") {
                    let parts = pair.split(separator: "=", maxSplits: 1)
                    guard parts.count == 2, parts[1].hasPrefix("\""), parts[1].hasSuffix("\"") else { throw Malformed(line: line) }
                    labels[String(parts[0])] = String(parts[1].dropFirst().dropLast())
                }
            } else {
                name = String(series)
            }
            guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" }) else { throw Malformed(line: line) }
            samples.append((name, labels, value))
        }
    }

    /// The value of the one series with exactly these labels.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }
}
