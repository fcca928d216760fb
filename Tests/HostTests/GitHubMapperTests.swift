import Foundation
import PluginKit
import Testing

@testable import Host

/// The shipped `github` mapper, loaded from its `.so` as the server loads it, against realistic payloads of each event
/// type: its fields must equal the reviewed golden files in Fixtures/github/*.fields.json. To regenerate them after a
/// deliberate change, run the suite with HOOKPROXY_UPDATE_GOLDEN=1 and review the diff.
@Suite("GitHub mapper")
struct GitHubMapperTests {
    /// Fixture file → the X-GitHub-Event it was sent with.
    static let fixtures: [(file: String, event: String)] = [
        ("ping", "ping"), ("push", "push"), ("pull_request", "pull_request"), ("pull_request_merged", "pull_request"),
        ("issues", "issues"), ("issue_comment", "issue_comment"), ("release", "release"), ("workflow_run", "workflow_run"),
        ("check_run", "check_run"),
    ]

    static func mapper(options: JSONValue = [:]) async throws -> PluginInstance {
        let plugin = try #require(
            await shippedPlugins().plugins["github"], "libhookproxy-github.so beside the executable (run swift build)")
        return try await pluginInstance(plugin, options: options)
    }

    static func map(_ instance: PluginInstance, event: String, payload: [UInt8]) async throws -> PluginInstance.MapOutcome {
        let document: JSONValue = [
            "source": "github", "headers": ["x-github-event": .string(event)], "payload": try JSONValue(parsing: payload),
        ]
        return await instance.map(document: document.serializedBytes(), body: payload, contentType: "application/json")
    }

    @Test("each event type maps to its golden fields", arguments: fixtures.map(\.file))
    func golden(file: String) async throws {
        let event = try #require(Self.fixtures.first { $0.file == file }?.event)
        let directory = TestPaths.fixtures + "/github/"
        let payload = try #require(FileManager.default.contents(atPath: directory + file + ".json"))
        guard case .fields(let fields) = try await Self.map(try await Self.mapper(), event: event, payload: Array(payload)) else {
            Issue.record("the mapper failed on \(file)")
            return
        }
        let actual = JSONValue.object(fields)
        let goldenPath = directory + file + ".fields.json"
        if ProcessInfo.processInfo.environment["HOOKPROXY_UPDATE_GOLDEN"] == "1" {
            try (Self.pretty(actual) + "\n").write(toFile: goldenPath, atomically: true, encoding: .utf8)
        }
        let golden = try JSONValue(parsing: Array(try #require(FileManager.default.contents(atPath: goldenPath))))
        #expect(actual == golden, "\(file): got \(actual.serialized())")
    }

    @Test("a payload without the event header, or not JSON, is a permanent mapping failure; unknown events get a title")
    func failures() async throws {
        let instance = try await Self.mapper()
        let document: JSONValue = ["source": "github", "headers": [:], "payload": ["zen": "x"]]
        guard case .failed(let message, let permanent) = await instance.map(document: document.serializedBytes(), body: [], contentType: "")
        else {
            Issue.record("no failure without X-GitHub-Event")
            return
        }
        #expect(permanent && message.contains("X-GitHub-Event"))
        guard
            case .fields(let fields) = try await Self.map(
                instance, event: "deployment_status", payload: Array(#"{"action":"created","repository":{"full_name":"acme/api"}}"#.utf8))
        else {
            Issue.record("an unknown event failed")
            return
        }
        #expect(fields["title"] == "acme/api: deployment status created")
        await #expect(throws: (any Error).self) { try await Self.mapper(options: ["max_commits": 0]) }
        await #expect(throws: (any Error).self) { try await Self.mapper(options: ["commits": 3]) }
    }

    @Test("mapper: github with Discord and Slack destinations: good messages end to end with no mapping written")
    func endToEnd() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let yaml =
            testServerSection()
                + """
                destinations:
                  chat: { formatter: discord, url: "\(sink.url)/discord" }
                  team: { formatter: slack, url: "\(sink.url)/slack", options: { color_by: status } }
                sources:
                  github: { mapper: github, destinations: [chat, team] }
                """
        let server = try await TestServer.start(yaml: yaml)
        let payload = try #require(FileManager.default.contents(atPath: TestPaths.fixtures + "/github/workflow_run.json"))
        let response = try await send(
            .POST, server.ingestURL + "/webhooks/github", body: Array(payload),
            headers: [("Content-Type", "application/json"), ("X-GitHub-Event", "workflow_run")])
        #expect(response.status == 202)
        let id = try #require(response.json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id)
        let discord = try #require(sink.requests("/discord").first?.json)
        let embed = try #require(discord["embeds"]?.arrayValue?.first)
        #expect(embed["title"] == "acme/api: workflow CI failed on main")
        #expect(embed["url"] == "https://github.com/acme/api/actions/runs/30433642")
        #expect(embed["color"] == .int(0xE74C3C))
        #expect(embed["description"]?.stringValue?.contains("run #562") == true)
        let slack = try #require(sink.requests("/slack").first?.json)
        #expect(slack["text"] == "acme/api: workflow CI failed on main")
        #expect(slack["attachments"]?.arrayValue?.first?["color"] == "#e74c3c")
        // A request the mapper cannot handle is refused before anything is stored.
        let refused = try await send(
            .POST, server.ingestURL + "/webhooks/github", body: Array(payload), headers: [("Content-Type", "application/json")])
        #expect(refused.status == 400)
        #expect(refused.json?["detail"]?.stringValue?.contains("X-GitHub-Event") == true)
        try await server.stop()
        try await sink.stop()
    }

    /// Stable, readable JSON for golden files: two-space indents, members in the mapper's order.
    static func pretty(_ value: JSONValue, indent: String = "") -> String {
        switch value {
        case .object(let object):
            guard !object.members.isEmpty else { return "{}" }
            let inner = indent + "  "
            return "{\n"
                + object.members.map { inner + JSONValue.string($0.key).serialized() + ": " + pretty($0.value, indent: inner) }
                .joined(separator: ",\n") + "\n" + indent + "}"
        case .array(let elements):
            guard !elements.isEmpty else { return "[]" }
            let inner = indent + "  "
            return "[\n" + elements.map { inner + pretty($0, indent: inner) }.joined(separator: ",\n") + "\n" + indent + "]"
        default:
            return value.serialized()
        }
    }
}
