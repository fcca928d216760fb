import Foundation
import PluginKit
import Testing

@testable import Host

/// The two plugins of docs/plugins.md, built as the document says and used through a real server: the C example
/// (examples/plugins/cloudevents.c, one `cc` command) and the Swift kit example (examples/plugins/ntfy, built by
/// `swift build` as libntfy.so).
@Suite("Example plugins")
struct ExamplePluginTests {
    /// docs/plugins.md's build command for the C example, run from the repository root.
    static func buildCExample(into plugins: String) async throws {
        let command =
            "cd '\(TestPaths.packageRoot)' && cc -shared -fPIC -O2 -Wall -Wextra -std=c11 -I Sources/PluginABI/include "
            + "-o '\(plugins)/libcloudevents.so' examples/plugins/cloudevents.c"
        let result = try await shell(command + " 2>&1")
        #expect(result.status == 0, "\(result.output)")
    }

    @Test("the C and Swift examples load from a plugins directory and deliver through the server to a sink")
    func examplesEndToEnd() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let directory = TestPaths.temporaryDirectory("examples")
        let plugins = directory + "/plugins"
        try FileManager.default.createDirectory(atPath: plugins, withIntermediateDirectories: true)
        try await Self.buildCExample(into: plugins)
        try FileManager.default.copyItem(atPath: PluginLoader.executableDirectory + "/libntfy.so", toPath: plugins + "/libntfy.so")
        let yaml =
            testServerSection()
                + """
                plugins:
                  directory: plugins
                destinations:
                  events: { formatter: cloudevents, url: "\(sink.url)/events", options: { type: com.acme.ci } }
                  phone: { formatter: ntfy, url: "\(sink.url)/phone", options: { tags: [ci] } }
                sources:
                  github: { mapper: github, destinations: [events, phone] }
                """
        let server = try await TestServer.start(yaml: yaml, directory: directory)
        let payload = try #require(FileManager.default.contents(atPath: TestPaths.fixtures + "/github/workflow_run.json"))
        let response = try await send(
            .POST, server.ingestURL + "/webhooks/github", body: Array(payload),
            headers: [("Content-Type", "application/json"), ("X-GitHub-Event", "workflow_run")])
        let id = try #require(response.json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id)

        let event = try #require(sink.requests("/events").first)
        #expect(event.header("Content-Type") == "application/cloudevents+json")
        let cloud = try #require(event.json)
        #expect(cloud["specversion"] == "1.0")
        #expect(cloud["id"]?.stringValue == id)
        #expect(cloud["source"] == "hookproxy/github")
        #expect(cloud["type"] == "com.acme.ci")
        #expect(cloud["data"]?["fields"]?["title"] == "acme/api: workflow CI failed on main")
        #expect(cloud["data"]?["payload"]?["workflow_run"]?["run_number"] == 562)

        let push = try #require(sink.requests("/phone").first)
        #expect(String(decoding: push.body, as: UTF8.self).contains("run #562"))
        #expect(push.header("X-Title") == "acme/api: workflow CI failed on main")
        #expect(push.header("X-Priority") == "4")
        #expect(push.header("X-Tags") == "ci,rotating_light")
        #expect(push.header("X-Click") == "https://github.com/acme/api/actions/runs/30433642")
        try await server.stop()
        try await sink.stop()

        // Bad options are the plugin's own configuration error.
        let catalog = await discoverPlugins(plugins)
        let plugin = try #require(catalog.plugins["cloudevents"])
        do {
            _ = try await pluginInstance(plugin, options: ["type": "not a type!"])
            Issue.record("bad options were accepted")
        } catch {
            #expect(error.message.contains("option 'type'"))
        }
    }
}

/// What a formatter's answer does to a delivery, through the server: skip, transient and permanent failures with the
/// plugin's own message, and a slow call reported.
@Suite("Formatter failure semantics")
struct FormatterFailureTests {
    @Test("skip marks the delivery skipped; a transient failure is retried; a permanent one is dead at once; slowness is reported")
    func semantics() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let directory = TestPaths.temporaryDirectory("semantics")
        let plugins = directory + "/plugins"
        try FileManager.default.createDirectory(atPath: plugins, withIntermediateDirectories: true)
        _ = try await compileCPlugin(into: plugins)
        let yaml =
            testServerSection()
                + """
                plugins:
                  directory: plugins
                destinations:
                  c: { formatter: minimal, url: "\(sink.url)/c" }
                sources:
                  app: { destinations: [c] }
                """
        let server = try await TestServer.start(yaml: yaml, directory: directory)
        func post(_ marker: String) async throws -> String {
            try #require(try await server.post("app", json: #"{"m":"\#(marker)"}"#).json?["id"]?.stringValue)
        }
        let skipped = try await post("SKIP_ME")
        let transient = try await post("FAIL_TRANSIENT")
        let permanent = try await post("FAIL_PERMANENT")
        let slow = try await post("SLOW_ME")
        let injected = try await post("BAD_HEADER")
        try await server.waitForDeliveries(of: skipped, toBe: [.skipped])
        try await server.waitForDeliveries(of: permanent, toBe: [.dead])
        try await server.waitForDeliveries(of: slow)
        // The schedule is 3 retries of 200 ms: the transient failure is tried 4 times, then dead.
        try await server.waitForDeliveries(of: transient, toBe: [.dead])

        let skip = try #require(try await server.detail(skipped)?.deliveries.first)
        #expect(skip.history.count == 1 && skip.history[0].error?.contains("minimal: told to skip") == true)
        let retried = try #require(try await server.detail(transient)?.deliveries.first)
        #expect(retried.history.count == 4)
        #expect(retried.history.allSatisfy { $0.error?.contains("minimal: a passing problem") == true && $0.httpStatus == nil })
        let dead = try #require(try await server.detail(permanent)?.deliveries.first)
        #expect(dead.history.count == 1)
        #expect(dead.lastError?.contains("minimal: cannot format this event") == true)
        // A header value with a CR LF in it is the plugin's permanent failure, named without its value.
        try await server.waitForDeliveries(of: injected, toBe: [.dead])
        let refused = try #require(try await server.detail(injected)?.deliveries.first)
        #expect(
            refused.lastError
                == "formatter 'minimal' failed: it returned header 'X-Minimal' with a value that is not a valid HTTP header value",
            "\(refused.lastError ?? "")")
        #expect(sink.requests("/c").count == 1, "only the slow event is sent")

        let metrics = try PrometheusText(try await send(.GET, server.adminURL + "/metrics"))
        #expect(metrics.value("hookproxy_plugin_slow_calls_total", ["plugin": "minimal", "operation": "format"]) == 1)
        #expect(metrics.value("hookproxy_plugin_errors_total", ["plugin": "minimal", "operation": "format"]) == 6)
        try await server.stop()
        try await sink.stop()
    }
}
