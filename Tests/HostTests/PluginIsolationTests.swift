import Foundation
import PluginKit
import Synchronization
import Testing

@testable import Host

/// Plugins that crash, abort, exit, hang, overflow their stack or allocate without end, on chosen payloads only
/// (Fixtures/hostile_plugin.c, compiled at test time), as formatters and as mappers, isolated in worker processes (the
/// default) and in process. Real processes, real signals.
// One at a time: each test starts servers, workers and crashes of its own, and together they would starve the two
// cores the rest of the suite shares.
@Suite("Plugin isolation", .serialized)
struct PluginIsolationTests {
    /// Each misbehaviour, and what the error of a call that did it says (isolated).
    static let misbehaviours: [(marker: String, reason: String)] = [
        ("CRASH_SEGV", "plugin hostile crashed (SIGSEGV)"), ("CRASH_ABORT", "plugin hostile crashed (SIGABRT)"),
        ("CRASH_EXIT", "plugin hostile exited (status 0)"), ("HANG", "plugin hostile did not answer within 3s"),
        ("RECURSE", "plugin hostile crashed (SIGSEGV: stack overflow)"),
        ("ALLOCATE", "plugin hostile ran out of memory (memory_limit 64 MiB"),
    ]

    /// A directory with the hostile plugin in `plugins/`.
    static func directory(_ label: String) async throws -> String {
        let directory = TestPaths.temporaryDirectory(label)
        try FileManager.default.createDirectory(atPath: directory + "/plugins", withIntermediateDirectories: true)
        _ = try await compileCPlugin(into: directory + "/plugins", file: "libhostile.so", source: "hostile_plugin.c")
        return directory
    }

    /// Sources `app` (to `hostile`, formatted by the plugin, and `other`, formatted by `generic`) and `mapped` (the
    /// plugin as its mapper, to `other`).
    /// The deadline is generous enough for an allocation to run into the 64 MB cap on a loaded machine (a deadline is
    /// wall-clock time, and a starved worker gets little of it).
    static func yaml(sink: String, server: String = testServerSection(), plugins: String = "", callTimeout: String = "3s") -> String {
        server + """
            plugins:
              directory: plugins
              call_timeout: \(callTimeout)
              memory_limit: 64MB
            \(plugins)
            destinations:
              hostile: { formatter: hostile, url: "\(sink)/hostile" }
              other: { formatter: generic, url: "\(sink)/other", options: { mode: envelope } }
            sources:
              app: { destinations: [hostile, other] }
              mapped: { mapper: hostile, destinations: [other] }
            """
    }

    /// Sends health checks and harmless events the whole time, from a shell loop of `curl` in a process of its own: the
    /// times are the server's answers, not this test process's (whose threads the whole suite shares) scheduling.
    final class Prober: Sendable {
        /// The answers' times (health checks and ingest requests), what failed, and the events sent.
        struct Results {
            var times: [Duration] = []
            var failures: [String] = []
            var sent: [String] = []
            /// The file the answers were written to, for a failure's message.
            var file = ""

            /// The time 95 % of the answers took at most.
            var typical: Duration { times.sorted().dropLast(times.count / 20).last ?? .zero }
            var slowest: Duration { times.max() ?? .zero }
        }

        private let process: Process
        private let output: String

        init(admin: String, ingest: String, source: String = "app") throws {
            output = TestPaths.temporaryDirectory("probe") + "/probes.txt"
            // Each answer is one line: "health STATUS SECONDS" or "ingest STATUS SECONDS BODY".
            let script = #"""
                n=0
                while :; do
                  n=$((n+1))
                  curl -s -o /dev/null -m 10 -w 'health %{http_code} %{time_total}\n' "$ADMIN/healthz"
                  curl -s -m 10 -o "$BODY" -w 'ingest %{http_code} %{time_total} ' -H 'Content-Type: application/json' \
                    -d "{\"probe\":$n}" "$INGEST/webhooks/$SOURCE"
                  cat "$BODY" 2>/dev/null; echo
                  sleep 0.1
                done
                """#
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = ["-c", script]
            process.environment = ["ADMIN": admin, "INGEST": ingest, "SOURCE": source, "BODY": output + ".body", "PATH": "/usr/bin:/bin"]
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
            process.standardError = FileHandle.nullDevice
            try process.run()
            self.process = process
        }

        /// Stops probing; the answers' times, what failed, and the events sent.
        func stop() async -> Results {
            // SIGKILL: children of Foundation's Process start with SIGTERM blocked.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            var results = Results()
            results.file = output
            let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: " ", maxSplits: 3)
                guard fields.count >= 3, let seconds = Double(fields[2]) else { continue }
                results.times.append(.milliseconds(Int64(seconds * 1000)))
                let expected = fields[0] == "health" ? "200" : "202"
                if fields[1] != expected { results.failures.append("\(fields[0]) answered \(fields[1])") }
                if fields[0] == "ingest", fields.count == 4, let id = String(fields[3]).jsonID { results.sent.append(id) }
            }
            return results
        }
    }

    @Test(
        "isolated formatters that segfault, abort, exit, hang, overflow their stack or allocate without end fail only their own deliveries: dead as poison events after two, while everything else is delivered and the server answers within a second"
    )
    func isolatedFormatters() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let directory = try await Self.directory("isolated")
        // A process of its own, as in production: its answers' times are its own, not those of this test process's
        // threads, which the whole suite shares.
        let (ingest, admin) = (try unusedPort(), try unusedPort())
        try Self.yaml(sink: sink.url, server: testServerSection(listen: "127.0.0.1:\(ingest)", admin: "127.0.0.1:\(admin)"))
            .write(toFile: directory + "/sources.yaml", atomically: true, encoding: .utf8)
        let adminURL = "http://127.0.0.1:\(admin)"
        let child = try await ChildServer(
            config: directory + "/sources.yaml", healthURL: adminURL + "/healthz", log: directory + "/serve.log")
        let prober = try Prober(admin: adminURL, ingest: "http://127.0.0.1:\(ingest)")
        var poisoned: [(id: String, reason: String)] = []
        for (marker, reason) in Self.misbehaviours {
            let answer = try await send(
                .POST, "http://127.0.0.1:\(ingest)/webhooks/app", body: Array(#"{"m":"\#(marker)"}"#.utf8),
                headers: [("Content-Type", "application/json")])
            poisoned.append((try #require(answer.json?["id"]?.stringValue), reason))
        }
        func detail(_ id: String) async throws -> [JSONValue] {
            try await send(.GET, "\(adminURL)/admin/events/\(id)").json?["deliveries"]?.arrayValue ?? []
        }
        let finished = Set(DeliveryStatus.finished.map(\.rawValue))
        try await waitUntil("every poisoned delivery to be finished", timeout: .seconds(90)) {
            for (id, _) in poisoned {
                let deliveries = try await detail(id)
                guard !deliveries.isEmpty, deliveries.allSatisfy({ finished.contains($0["status"]?.stringValue ?? "") }) else {
                    return false
                }
            }
            return true
        }
        let probed = await prober.stop()
        for (id, reason) in poisoned {
            let deliveries = try await detail(id)
            let hostile = try #require(deliveries.first { $0["destination"] == "hostile" })
            #expect(hostile["status"] == "dead", "\(reason): \(hostile.serialized())")
            let lastError = hostile["last_error"]?.stringValue ?? ""
            #expect(lastError.hasPrefix("poison event: \(reason)"), "\(lastError)")
            // Two attempts whose call crashed or timed out; waits for a free worker while others restart spend none.
            let struck = (hostile["history"]?.arrayValue ?? []).filter { $0["error"]?.stringValue?.hasPrefix(reason) == true }
            #expect(struck.count == 2, "\(reason): \(hostile["history"]?.serialized() ?? "")")
            #expect(hostile["attempts"] == 2, "\(reason): \(hostile["attempts"]?.serialized() ?? "") attempts")
            #expect(deliveries.first { $0["destination"] == "other" }?["status"] == "delivered")
        }
        // Every harmless event reached both destinations; every event at all reached the other one.
        try await waitUntil("every probe at both destinations") {
            let hostileIDs = Set(sink.requests("/hostile").compactMap { String($0.text.dropFirst("hostile:".count)).jsonID })
            let otherIDs = Set(sink.requests("/other").compactMap { $0.json?["id"]?.stringValue })
            return hostileIDs.isSuperset(of: probed.sent) && otherIDs.isSuperset(of: poisoned.map(\.id) + probed.sent)
        }
        Self.expectResponsive(probed)

        let metrics = try PrometheusText(try await send(.GET, adminURL + "/metrics"))
        #expect((metrics.value("hookproxy_plugin_crashes_total", ["plugin": "hostile", "operation": "format"]) ?? 0) >= 10)
        #expect(metrics.value("hookproxy_plugin_timeouts_total", ["plugin": "hostile", "operation": "format"]) == 2)
        #expect((metrics.value("hookproxy_plugin_worker_restarts_total", ["plugin": "hostile"]) ?? 0) >= 10)
        let plugins = try #require(try await send(.GET, adminURL + "/admin/plugins").json?["plugins"]?.arrayValue)
        let hostile = try #require(plugins.first { $0["name"] == "hostile" })
        #expect(hostile["isolation"] == "process")
        #expect(hostile["health"]?["crashes"]?.intValue ?? 0 >= 10)
        #expect(hostile["health"]?["last_failure"]?["reason"]?.stringValue?.hasPrefix("plugin hostile") == true)
        let dead = try await send(.GET, adminURL + "/admin/deliveries?status=dead&destination=hostile").json
        #expect(dead?["deliveries"]?.arrayValue?.count == Self.misbehaviours.count)
        #expect(try await child.terminate() == 0)
        try await sink.stop()
    }

    @Test(
        "an isolated mapper that crashes, hangs or runs out of memory answers 503 naming the plugin, stores nothing, and the next request is served"
    )
    func isolatedMappers() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let directory = try await Self.directory("isolated-mapper")
        let server = try await TestServer.start(yaml: Self.yaml(sink: sink.url), directory: directory)
        for (marker, reason) in Self.misbehaviours {
            let started = ContinuousClock.now
            let answer = try await server.post("mapped", json: #"{"m":"\#(marker)"}"#)
            #expect(answer.status == 503, "\(marker): \(answer.status)")
            #expect(answer.json?["error"] == "mapper_crashed", "\(marker): \(answer.json?.serialized() ?? "")")
            let detail = answer.json?["detail"]?.stringValue ?? ""
            #expect(detail.hasPrefix(reason), "\(marker): \(detail)")
            #expect(detail.contains("mapping this request"))
            #expect(ContinuousClock.now - started < .seconds(5))
            // The marker's name lowercased: the plugin misbehaves only on the marker itself.
            let next = try await server.post("mapped", json: #"{"m":"fine after \#(marker.lowercased())"}"#)
            #expect(next.status == 202, "the request after \(marker): \(next.status) \(next.json?.serialized() ?? "")")
        }
        let stored = try await server.store.listEvents(RecordFilter(source: "mapped"), cursor: nil, limit: 100).items
        #expect(stored.count == Self.misbehaviours.count, "only the harmless requests are stored")
        for event in stored { try await server.waitForDeliveries(of: event.id) }
        #expect(sink.requests("/other").allSatisfy { $0.text.contains("fine after") })
        try await server.stop()
        try await sink.stop()
    }

    @Test("SIGTERM ends a server whose isolated plugin call hangs, within shutdown_grace and a few seconds, and its workers with it")
    func shutdownWithHungWorker() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let directory = try await Self.directory("hung-shutdown")
        let (ingest, admin) = (try unusedPort(), try unusedPort())
        let server = testServerSection(listen: "127.0.0.1:\(ingest)", admin: "127.0.0.1:\(admin)")
            .replacingOccurrences(of: "  admin_listen:", with: "  shutdown_grace: 2s\n  admin_listen:")
        try Self.yaml(sink: sink.url, server: server, callTimeout: "1h")
            .write(toFile: directory + "/sources.yaml", atomically: true, encoding: .utf8)
        let child = try await ChildServer(
            config: directory + "/sources.yaml", healthURL: "http://127.0.0.1:\(admin)/healthz", log: directory + "/serve.log")
        _ = try await send(
            .POST, "http://127.0.0.1:\(ingest)/webhooks/app", body: Array(#"{"m":"HANG"}"#.utf8),
            headers: [("Content-Type", "application/json")])
        try await waitUntil("the hung call to be in its worker") {
            let plugins = try await send(.GET, "http://127.0.0.1:\(admin)/admin/plugins").json?["plugins"]?.arrayValue ?? []
            return plugins.first { $0["name"] == "hostile" }?["health"]?["busy"]?.intValue == 1
        }
        let workers = child.workers
        #expect(!workers.isEmpty)
        let started = ContinuousClock.now
        #expect(try await child.terminate() == 0)
        #expect(ContinuousClock.now - started < .seconds(7), "took \(ContinuousClock.now - started); log: \(child.log)")
        try await waitUntil("the workers to be gone") {
            workers.allSatisfy { !FileManager.default.fileExists(atPath: "/proc/\($0)/cmdline") || isZombie($0) }
        }
        try await sink.stop()
    }

    /// The server answered every probe, and within a second: all of them when the machine is quiet; under the whole
    /// suite on two cores, 95 % within a second and none later than 2 s (a server held up by a plugin would wait for a
    /// call's whole deadline, or forever).
    static func expectResponsive(_ probed: Prober.Results) {
        #expect(probed.failures.isEmpty, "\(probed.failures)")
        #expect(probed.times.count >= 10, "only \(probed.times.count) probes")
        #expect(probed.typical < .seconds(1), "95 % of the answers took up to \(probed.typical) (\(probed.file))")
        #expect(probed.slowest < .seconds(2), "an answer took \(probed.slowest) (\(probed.file))")
    }

    // MARK: In process

    static func inProcessConfig(directory: String, sink: String, ingest: Int, admin: Int, callTimeout: String = "1s") throws -> String {
        let server = testServerSection(listen: "127.0.0.1:\(ingest)", admin: "127.0.0.1:\(admin)")
            .replacingOccurrences(of: "  admin_listen:", with: "  shutdown_grace: 2s\n  admin_listen:")
        let file = directory + "/sources.yaml"
        try Self.yaml(
            sink: sink, server: server, plugins: "  overrides:\n    hostile: { isolation: in_process }\n", callTimeout: callTimeout
        )
        .write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    /// The Swift runtime's backtracer takes seconds per crash in a debug build: the tests do not need its report.
    static let quickCrash = ["SWIFT_BACKTRACE": "enable=no"]

    @Test(
        "in process, a plugin that crashes, aborts, exits, overflows its stack or allocates without end ends the process; the next start quarantines the delivery that was inside the plugin instead of resuming it, and serves"
    )
    func inProcessCrashes() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let directory = try await Self.directory("in-process")
        let (ingest, admin) = (try unusedPort(), try unusedPort())
        // No hang here: a deadline long enough for an allocation to run into the limit on a loaded machine.
        let file = try Self.inProcessConfig(directory: directory, sink: sink.url, ingest: ingest, admin: admin, callTimeout: "30s")
        let health = "http://127.0.0.1:\(admin)/healthz"
        let crashes: [(marker: String, what: String)] = [
            ("CRASH_SEGV", "crashed hookproxy (SIGSEGV)"), ("CRASH_ABORT", "crashed hookproxy (SIGABRT)"), ("CRASH_EXIT", "called exit()"),
            ("RECURSE", "crashed hookproxy (SIGSEGV)"), ("ALLOCATE", "crashed hookproxy (SIGSEGV)"),
        ]
        var child = try await ChildServer(
            config: file, healthURL: health, log: directory + "/serve.log", dataLimit: 512 << 20, environment: Self.quickCrash)
        var known = Set<String>()
        for (marker, what) in crashes {
            // The delivery may start, and crash the process, before the 202 is out: the event is found in the store then.
            _ = try? await send(
                .POST, "http://127.0.0.1:\(ingest)/webhooks/app", body: Array(#"{"m":"\#(marker)"}"#.utf8),
                headers: [("Content-Type", "application/json")])
            _ = try await child.waitForExit()
            // The second start serves: no crash loop.
            child = try await ChildServer(
                config: file, healthURL: health, log: directory + "/serve.log", dataLimit: 512 << 20, environment: Self.quickCrash)
            let listed = try await send(.GET, "http://127.0.0.1:\(admin)/admin/events?source=app").json?["events"]?.arrayValue ?? []
            let new = listed.compactMap { $0["id"]?.stringValue }.filter { !known.contains($0) }
            #expect(new.count == 1, "\(marker): \(new.count) new events")
            let id = try #require(new.first)
            known.formUnion(listed.compactMap { $0["id"]?.stringValue })
            // The crash is recorded when the delivery engine starts, which may be just after /healthz answers.
            var hostile: JSONValue = .null
            try? await waitUntil("\(marker): the delivery quarantined", timeout: .seconds(30)) {
                let detail = try await send(.GET, "http://127.0.0.1:\(admin)/admin/events/\(id)").json
                hostile = detail?["deliveries"]?.arrayValue?.first { $0["destination"] == "hostile" } ?? .null
                return hostile["status"] == "dead"
            }
            #expect(hostile["status"] == "dead", "\(marker): \(hostile.serialized())")
            let error = hostile["last_error"]?.stringValue ?? ""
            #expect(
                error.hasPrefix("poison event: plugin hostile \(what) formatting this event (isolation: in_process)"), "\(marker): \(error)"
            )
            try await waitUntil("\(marker)'s other delivery") {
                let detail = try await send(.GET, "http://127.0.0.1:\(admin)/admin/events/\(id)").json
                return detail?["deliveries"]?.arrayValue?.first { $0["destination"] == "other" }?["status"] == "delivered"
            }
            let fine = try await send(
                .POST, "http://127.0.0.1:\(ingest)/webhooks/app", body: Array(#"{"m":"fine after \#(marker.lowercased())"}"#.utf8),
                headers: [("Content-Type", "application/json")])
            #expect(fine.status == 202)
            if let id = fine.json?["id"]?.stringValue { known.insert(id) }
            try await waitUntil("the event after \(marker) at both destinations") {
                sink.requests("/hostile").contains { $0.text.contains("fine after \(marker.lowercased())") }
                    && sink.requests("/other").contains { $0.text.contains("fine after \(marker.lowercased())") }
            }
        }
        #expect(try await child.terminate() == 0)
        try await sink.stop()
    }

    @Test(
        "in process, a formatter stuck in a loop is abandoned at its deadline on a thread of its own: its delivery is dead after two, others are delivered, the server answers within a second, and SIGTERM still ends it in time"
    )
    func inProcessHang() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let directory = try await Self.directory("in-process-hang")
        let (ingest, admin) = (try unusedPort(), try unusedPort())
        let file = try Self.inProcessConfig(directory: directory, sink: sink.url, ingest: ingest, admin: admin)
        let child = try await ChildServer(config: file, healthURL: "http://127.0.0.1:\(admin)/healthz", log: directory + "/serve.log")
        let prober = try Prober(admin: "http://127.0.0.1:\(admin)", ingest: "http://127.0.0.1:\(ingest)")
        let posted = try await send(
            .POST, "http://127.0.0.1:\(ingest)/webhooks/app", body: Array(#"{"m":"HANG"}"#.utf8),
            headers: [("Content-Type", "application/json")])
        let id = try #require(posted.json?["id"]?.stringValue)
        try await waitUntil("the hung delivery to be dead", timeout: .seconds(30)) {
            let detail = try await send(.GET, "http://127.0.0.1:\(admin)/admin/events/\(id)").json
            return detail?["deliveries"]?.arrayValue?.first { $0["destination"] == "hostile" }?["status"] == "dead"
        }
        let probed = await prober.stop()
        let detail = try #require(try await send(.GET, "http://127.0.0.1:\(admin)/admin/events/\(id)").json)
        let hostile = try #require(detail["deliveries"]?.arrayValue?.first { $0["destination"] == "hostile" })
        #expect(hostile["attempts"] == 2)
        #expect(
            hostile["last_error"]?.stringValue?.hasPrefix("poison event: plugin hostile did not answer within 1s formatting this event")
                == true,
            "\(hostile["last_error"]?.stringValue ?? "")")
        Self.expectResponsive(probed)
        // The probes' events went through the same in-process plugin, on the threads that replaced the stuck ones.
        try await waitUntil("every probe at both destinations") {
            let hostileIDs = Set(sink.requests("/hostile").compactMap { String($0.text.dropFirst("hostile:".count)).jsonID })
            let otherIDs = Set(sink.requests("/other").compactMap { $0.json?["id"]?.stringValue })
            return hostileIDs.isSuperset(of: probed.sent) && otherIDs.isSuperset(of: probed.sent)
        }
        let plugins = try #require(try await send(.GET, "http://127.0.0.1:\(admin)/admin/plugins").json?["plugins"]?.arrayValue)
        #expect(plugins.first { $0["name"] == "hostile" }?["health"]?["stuck"] == 2)
        #expect(plugins.first { $0["name"] == "hostile" }?["isolation"] == "in_process")
        let started = ContinuousClock.now
        #expect(try await child.terminate() == 0)
        #expect(ContinuousClock.now - started < .seconds(7), "SIGTERM took \(ContinuousClock.now - started) with two stuck threads")
        try await sink.stop()
    }

    @Test(
        "in process, a mapper that crashes, aborts or exits on a body has that body refused with 503 from the next start on, across restarts; a mapper stuck in a loop answers 503 at the deadline; other bodies are served"
    )
    func inProcessMapperCrash() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let directory = try await Self.directory("in-process-mapper")
        let (ingest, admin) = (try unusedPort(), try unusedPort())
        let file = try Self.inProcessConfig(directory: directory, sink: sink.url, ingest: ingest, admin: admin)
        let health = "http://127.0.0.1:\(admin)/healthz"
        let url = "http://127.0.0.1:\(ingest)/webhooks/mapped"
        func post(_ marker: String) async throws -> TestResponse {
            try await send(.POST, url, body: Array(#"{"m":"\#(marker)"}"#.utf8), headers: [("Content-Type", "application/json")])
        }
        var child = try await ChildServer(config: file, healthURL: health, log: directory + "/serve.log", environment: Self.quickCrash)
        var poisoned: [String] = []
        for marker in ["CRASH_SEGV", "CRASH_ABORT", "CRASH_EXIT"] {
            let crashed = try? await post(marker)
            #expect(crashed == nil, "\(marker): the crash answered \(crashed?.status ?? 0)")
            _ = try await child.waitForExit()
            poisoned.append(marker)
            // The next start serves, and refuses every body that crashed it so far, without calling the mapper.
            child = try await ChildServer(config: file, healthURL: health, log: directory + "/serve.log", environment: Self.quickCrash)
            for earlier in poisoned {
                let refused = try await post(earlier)
                #expect(refused.status == 503, "\(earlier) after \(marker): \(refused.status)")
                #expect(refused.json?["error"] == "mapper_crashed")
                #expect(
                    refused.json?["detail"]?.stringValue?.contains("plugin hostile crashed hookproxy mapping this request body before")
                        == true)
            }
            #expect(try await post("fine after \(marker.lowercased())").status == 202)
        }
        // A mapper stuck in a loop in process: the request is answered at the deadline, the next one is served.
        let started = ContinuousClock.now
        let hung = try await post("HANG")
        #expect(hung.status == 503 && hung.json?["error"] == "mapper_crashed", "\(hung.json?.serialized() ?? "")")
        #expect(hung.json?["detail"]?.stringValue?.hasPrefix("plugin hostile did not answer within 1s mapping this request") == true)
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(try await post("fine after hang").status == 202)
        // The bodies stay refused across a clean restart too.
        #expect(try await child.terminate() == 0)
        child = try await ChildServer(config: file, healthURL: health, log: directory + "/serve.log", environment: Self.quickCrash)
        for marker in poisoned { #expect(try await post(marker).status == 503, "\(marker) after a clean restart") }
        #expect(try await child.terminate() == 0)
        try await sink.stop()
    }

    @Test("a delivery in flight during three abnormal exits in a row is quarantined, whatever the cause; an operator can replay it")
    func crashLoopQuarantine() async throws {
        let sink = RecordingSink()
        try await sink.start()
        // The receiver holds every request longer than the test: each start finds the delivery in flight and is killed.
        sink.answerByDefault(.init(status: 200, delay: .seconds(15)))
        let directory = TestPaths.temporaryDirectory("crash-loop")
        let (ingest, admin) = (try unusedPort(), try unusedPort())
        let yaml =
            testServerSection(listen: "127.0.0.1:\(ingest)", admin: "127.0.0.1:\(admin)")
            .replacingOccurrences(of: "  timeout: 5s", with: "  timeout: 120s\n  max_crashes: 3") + """
                destinations:
                  slow: { formatter: generic, url: "\(sink.url)/slow" }
                sources:
                  app: { destinations: [slow] }
                """
        try yaml.write(toFile: directory + "/sources.yaml", atomically: true, encoding: .utf8)
        let health = "http://127.0.0.1:\(admin)/healthz"
        var child = try await ChildServer(config: directory + "/sources.yaml", healthURL: health, log: directory + "/serve.log")
        let posted = try await send(
            .POST, "http://127.0.0.1:\(ingest)/webhooks/app", body: Array(#"{"n":1}"#.utf8), headers: [("Content-Type", "application/json")]
        )
        let id = try #require(posted.json?["id"]?.stringValue)
        for crash in 1...3 {
            try await waitUntil("attempt \(crash) in flight at the receiver") { sink.requests("/slow").count == crash }
            let workers = child.workers
            #expect(!workers.isEmpty, "the generic formatter runs in workers")
            try await child.kill()
            // Worker processes never outlive the host, even one killed with SIGKILL.
            try await waitUntil("the killed server's workers to be gone") {
                workers.allSatisfy { !FileManager.default.fileExists(atPath: "/proc/\($0)/cmdline") || isZombie($0) }
            }
            child = try await ChildServer(config: directory + "/sources.yaml", healthURL: health, log: directory + "/serve.log")
        }
        let detail = try #require(try await send(.GET, "http://127.0.0.1:\(admin)/admin/events/\(id)").json)
        let delivery = try #require(detail["deliveries"]?.arrayValue?.first)
        #expect(delivery["status"] == "dead")
        #expect(
            delivery["last_error"]?.stringValue?.hasPrefix("poison event: in flight during 3 abnormal exits of hookproxy in a row") == true,
            "\(delivery.serialized())")
        let listed = try await shell(
            "'\(PluginLoader.executableDirectory)/hookproxy' deliveries --config '\(directory)/sources.yaml' --status dead")
        #expect(listed.output.contains("in flight during 3 abnormal exits"), "\(listed.output)")
        #expect(sink.requests("/slow").count == 3, "the quarantined delivery was not sent again")
        sink.answerByDefault(.init(status: 200))
        let replay = try await adminPost("http://127.0.0.1:\(admin)/admin/events/\(id)/replay")
        #expect(replay.status == 202)
        try await waitUntil("the replay at the receiver") { sink.requests("/slow").count == 4 }
        #expect(try await child.terminate() == 0)
        try await sink.stop()
    }
}

/// True when `pid` has exited and not been reaped yet.
func isZombie(_ pid: Int32) -> Bool {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
    return status.split(separator: ")").last?.trimmingCharacters(in: .whitespaces).hasPrefix("Z") == true
}

extension String {
    /// The `id` of the JSON document this text is.
    var jsonID: String? { (try? JSONValue(parsing: self))?["id"]?.stringValue }
}
