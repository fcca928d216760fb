import Foundation
import NIOPosix
import PluginKit
import Testing

@testable import Host

/// The operator's command line, as the real executable, on real stored events.
@Suite("Command line")
struct CLITests {
    static var hookproxy: String { PluginLoader.executableDirectory + "/hookproxy" }

    static func run(_ arguments: String) async throws -> (status: Int32, output: String) {
        try await shell("\(hookproxy) \(arguments) 2>&1")
    }

    @Test("events, deliveries and show read the store; replay by filter works with no server running, and the next server sends it")
    func inspectAndReplayOffline() async throws {
        let sink = RecordingSink()
        sink.plan("/broken", statuses: [400, 400])
        try await sink.start()
        let yaml = AdminAPITests.yaml(sink: sink.url)
        var server = try await TestServer.start(yaml: yaml)
        let directory = server.directory
        let config = directory + "/sources.yaml"
        let first = try await AdminAPITests.post(server, "app", #"{"n":1}"#)
        let second = try await AdminAPITests.post(server, "app", #"{"n":2}"#)
        for id in [first, second] { try await server.waitForDeliveries(of: id, toBe: [.delivered, .dead]) }
        try await server.stop()

        let events = try await Self.run("events --config \(config) --json")
        #expect(events.status == 0, "\(events.output)")
        let listed = try JSONValue(parsing: Array(events.output.utf8))
        #expect(listed["events"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == [second, first])
        let table = try await Self.run("events --config \(config) --limit 1")
        #expect(table.output.contains(second) && table.output.contains("broken:dead") && table.output.contains("more: --cursor \(second)"))

        let dead = try await Self.run("deliveries --config \(config) --status dead")
        #expect(dead.status == 0)
        #expect(dead.output.components(separatedBy: "destination answered HTTP 400").count - 1 == 2, "\(dead.output)")

        let shown = try await Self.run("show --config \(config) \(first)")
        #expect(shown.output.contains(#"{"n":1}"#) && shown.output.contains("HTTP 400") && shown.output.contains("→ broken: dead"))
        let shownJSON = try JSONValue(parsing: Array(try await Self.run("show --config \(config) \(first) --json").output.utf8))
        #expect(shownJSON["id"]?.stringValue == first)
        #expect(try await Self.run("show --config \(config) no-such-id").status == 1)

        let dry = try await Self.run("replay --config \(config) --status dead --since 1h --dry-run")
        #expect(dry.status == 0)
        #expect(dry.output.contains("dry run: 2 matching deliveries; would schedule 2"), "\(dry.output)")
        let replayed = try await Self.run("replay --config \(config) --status dead --destination broken --json")
        #expect(replayed.status == 0, "\(replayed.output)")
        #expect(try JSONValue(parsing: Array(replayed.output.utf8))["scheduled"] == 2)
        #expect(try await Self.run("replay --config \(config)").status == 2, "no ids and no filters is a usage error")
        #expect(try await Self.run("replay --config \(config) \(first) --status dead").status == 2)
        #expect(try await Self.run("replay --config \(config) --status gone").status == 2)
        #expect(sink.requests("/broken").count == 2, "nothing is sent while no server runs")

        server = try await TestServer.start(yaml: yaml, directory: directory)
        try await waitUntil("the offline replays sent by the new server") { sink.requests("/broken").count == 4 }
        for id in [first, second] { try await server.waitForDeliveries(of: id, toBe: [.delivered, .dead]) }
        #expect(try await server.detail(first)?.deliveries.filter { $0.destination == "broken" }.map(\.status) == [.dead, .delivered])
        try await server.stop()
        try await sink.stop()
    }

    @Test("preview prints the requests a payload would produce and sends nothing")
    func preview() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let directory = TestPaths.temporaryDirectory("preview")
        let config = directory + "/sources.yaml"
        try
            (testServerSection()
                + """
                destinations:
                  chat: { formatter: discord, url: "\(sink.url)/chat", headers: { Authorization: "Bot hidden-credential" } }
                  raw: { formatter: generic, url: "\(sink.url)/raw" }
                sources:
                  ci:
                    destinations: [chat, raw]
                    mapping:
                      title: { path: "$.title", required: true }
                """).write(toFile: config, atomically: true, encoding: .utf8)
        try #"{"title":"Build 42 passed","extra":1}"#.write(toFile: directory + "/payload.json", atomically: true, encoding: .utf8)

        let shown = try await Self.run("preview --config \(config) --source ci --payload \(directory)/payload.json")
        #expect(shown.status == 0, "\(shown.output)")
        #expect(shown.output.contains("=== chat (formatter discord)"))
        #expect(shown.output.contains("\"title\":\"Build 42 passed\""))
        #expect(shown.output.contains("Authorization: <redacted>"))
        #expect(!shown.output.contains("hidden-credential") && !shown.output.contains("/chat"))
        #expect(shown.output.contains("=== raw (formatter generic)"))
        let json = try JSONValue(
            parsing: Array(
                try await Self.run("preview --config \(config) --source ci --payload \(directory)/payload.json --destination raw --json")
                    .output.utf8))
        #expect(json["requests"]?.arrayValue?.count == 1)
        #expect(json["requests"]?.arrayValue?.first?["body"] == #"{"title":"Build 42 passed","extra":1}"#)
        #expect(json["fields"] == ["title": "Build 42 passed"])

        try "{}".write(toFile: directory + "/empty.json", atomically: true, encoding: .utf8)
        let refused = try await Self.run("preview --config \(config) --source ci --payload \(directory)/empty.json")
        #expect(refused.status == 1)
        #expect(refused.output.contains("HTTP 400") && refused.output.contains("title"))
        #expect(try await Self.run("preview --config \(config) --source nope --payload \(directory)/payload.json").status == 2)
        // A header without a name is a usage error, not a crash; the payload may come on standard input.
        let nameless = try await Self.run("preview --config \(config) --source ci --payload \(directory)/payload.json --header ''")
        #expect(nameless.status == 2, "\(nameless.output)")
        #expect(nameless.output.contains("--header must be 'Name: value'"), "\(nameless.output)")
        let piped = try await Self.run("preview --config \(config) --source ci --payload - < \(directory)/payload.json")
        #expect(piped.status == 0, "\(piped.output)")
        // preview has exited: anything it sent would have been answered, and recorded, already.
        #expect(sink.requests().isEmpty, "preview sent a request")
        try await sink.stop()
    }

    @Test("destinations shows the running server's lanes, and --pause / --resume suspend one")
    func destinationsPauseResume() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let (ingest, admin) = (try unusedPort(), try unusedPort())
        let yaml =
            testServerSection(listen: "127.0.0.1:\(ingest)", admin: "127.0.0.1:\(admin)")
                + """
                destinations:
                  out: { formatter: generic, url: "\(sink.url)/out" }
                sources:
                  app: { destinations: [out] }
                """
        let server = try await TestServer.start(yaml: yaml)
        let config = server.directory + "/sources.yaml"
        let paused = try await Self.run("destinations --config \(config) --pause out")
        #expect(paused.status == 0, "\(paused.output)")
        #expect(paused.output.contains("out") && paused.output.contains("suspended"))
        let id = try #require(try await server.post("app", json: "{}").json?["id"]?.stringValue)
        // An observation window: nothing may arrive while suspended.
        try await Task.sleep(for: .milliseconds(500))
        #expect(sink.requests("/out").isEmpty)
        let resumed = try await Self.run("destinations --config \(config) --resume out --json")
        #expect(try JSONValue(parsing: Array(resumed.output.utf8))["destinations"]?.arrayValue?.first?["state"] == "healthy")
        try await server.waitForDeliveries(of: id)
        #expect(try await Self.run("destinations --config \(config) --pause nope").status == 1)
        try await server.stop()
        #expect(try await Self.run("destinations --config \(config)").output.contains("cannot reach the admin API"))
        try await sink.stop()
    }

    @Test("plugins lists the shipped plugins and a refused file, as a table and as JSON")
    func plugins() async throws {
        let directory = TestPaths.temporaryDirectory("plugins-cli")
        let plugins = directory + "/plugins"
        try FileManager.default.createDirectory(atPath: plugins, withIntermediateDirectories: true)
        _ = try await compileCPlugin(into: plugins, file: "libbroken.so", defines: ["NO_ENTRY"])
        try (testServerSection() + "plugins:\n  directory: plugins\nsources:\n  inbox: { destinations: [] }\n")
            .write(toFile: directory + "/sources.yaml", atomically: true, encoding: .utf8)
        let table = try await Self.run("plugins --config \(directory)/sources.yaml")
        #expect(table.status == 0)
        for name in ["discord", "slack", "generic", "github"] { #expect(table.output.contains(name)) }
        #expect(table.output.contains("refused: \(plugins)/libbroken.so"))
        let json = try JSONValue(parsing: Array(try await Self.run("plugins --config \(directory)/sources.yaml --json").output.utf8))
        #expect(json["plugins"]?.arrayValue?.first { $0["name"] == "github" }?["capabilities"] == ["mapper"])
        #expect(json["plugins"]?.arrayValue?.allSatisfy { $0["isolation"] == "process" && $0["health"] == .null } == true)
        #expect(json["refused"]?.arrayValue?.count == 1)
        #expect(table.output.contains("no server answered"))
    }

    @Test("plugins refuses files and directories another user could write, ignores dotfiles, and follows a symlink only to a trusted file")
    func untrustedPluginFiles() async throws {
        let directory = TestPaths.temporaryDirectory("plugins-trust")
        let plugins = directory + "/plugins"
        let outside = directory + "/outside"
        let open = directory + "/open"
        for path in [plugins, outside, open] { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
        func build(_ into: String, _ file: String, name: String) async throws -> String {
            try await compileCPlugin(into: into, file: file, defines: ["PLUGIN_NAME=\"\(name)\""])
        }
        _ = try await build(plugins, "libgood.so", name: "good")
        let groupWritable = try await build(plugins, "libgroup.so", name: "groupw")
        chmod(groupWritable, 0o775)
        _ = try await build(plugins, ".libhidden.so", name: "hidden")
        let target = try await build(outside, "libtarget.so", name: "linked")
        try FileManager.default.createSymbolicLink(atPath: plugins + "/liblinked.so", withDestinationPath: target)
        let exposed = try await build(open, "libexposed.so", name: "exposed")
        chmod(open, 0o777)
        try FileManager.default.createSymbolicLink(atPath: plugins + "/libbadlink.so", withDestinationPath: exposed)
        let asRoot = geteuid() == 0
        if asRoot {
            let foreign = try await build(plugins, "libforeign.so", name: "foreign")
            #expect(chown(foreign, 1234, 1234) == 0)
        }
        func listing(_ pluginsDirectory: String) async throws -> (names: Set<String>, refused: [String: String]) {
            try (testServerSection() + "plugins:\n  directory: \(pluginsDirectory)\nsources:\n  inbox: { destinations: [] }\n")
                .write(toFile: directory + "/sources.yaml", atomically: true, encoding: .utf8)
            let result = try await Self.run("plugins --config \(directory)/sources.yaml --json")
            #expect(result.status == 0, "\(result.output)")
            let json = try JSONValue(parsing: Array(result.output.utf8))
            let names = Set(json["plugins"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? [])
            var refused: [String: String] = [:]
            for item in json["refused"]?.arrayValue ?? [] {
                if let file = item["file"]?.stringValue {
                    refused[URL(fileURLWithPath: file).lastPathComponent] = item["reason"]?.stringValue ?? ""
                }
            }
            return (names, refused)
        }
        let found = try await listing(plugins)
        #expect(found.names.isSuperset(of: ["good", "linked", "discord"]))
        #expect(found.names.isDisjoint(with: ["groupw", "hidden", "exposed", "foreign"]), "\(found.names)")
        #expect(found.refused["libgroup.so"]?.contains("it is group-writable (mode 0775)") == true, "\(found.refused)")
        #expect(found.refused["libbadlink.so"]?.contains("it links to \(exposed), and its directory \(open) is world-writable") == true)
        #expect(found.refused[".libhidden.so"] == nil && found.refused["liblinked.so"] == nil && found.refused["libgood.so"] == nil)
        if asRoot { #expect(found.refused["libforeign.so"]?.contains("owned by uid 1234") == true, "\(found.refused)") }
        let exposedDirectory = try await listing(open)
        #expect(!exposedDirectory.names.contains("exposed"))
        #expect(exposedDirectory.refused["libexposed.so"]?.contains("its directory \(open) is world-writable (mode 0777)") == true)
    }

    @Test("plugins shows each plugin's isolation and, from the running server, its workers' health")
    func pluginsFromServer() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let directory = TestPaths.temporaryDirectory("plugins-health")
        let admin = try unusedPort()
        let yaml =
            testServerSection(admin: "127.0.0.1:\(admin)") + """
                plugins:
                  overrides:
                    discord: { isolation: in_process }
                destinations:
                  raw: { formatter: generic, url: "\(sink.url)/raw" }
                  chat: { formatter: discord, url: "\(sink.url)/chat" }
                sources:
                  app: { destinations: [raw, chat] }
                """
        let server = try await TestServer.start(yaml: yaml, directory: directory)
        let id = try #require(try await server.post("app", json: #"{"title":"x"}"#).json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id)
        let table = try await Self.run("plugins --config \(directory)/sources.yaml")
        #expect(table.status == 0, "\(table.output)")
        let rows = table.output.split(separator: "\n")
        #expect(rows.first?.contains("ISOLATION") == true && rows.first?.contains("CRASHES") == true)
        let generic = try #require(rows.first { $0.hasPrefix("generic ") })
        #expect(generic.contains(" process ") && generic.contains(" healthy "), "\(generic)")
        let discord = try #require(rows.first { $0.hasPrefix("discord ") })
        #expect(discord.contains(" in_process ") && discord.contains(" healthy "), "\(discord)")
        #expect(rows.first { $0.hasPrefix("slack ") }?.contains(" unused ") == true)
        let json = try JSONValue(parsing: Array(try await Self.run("plugins --config \(directory)/sources.yaml --json").output.utf8))
        let health = json["plugins"]?.arrayValue?.first { $0["name"] == "generic" }?["health"]
        #expect(health?["running"]?.intValue ?? 0 >= 1)
        #expect(health?["crashes"] == 0)
        try await server.stop()
        try await sink.stop()
    }

    @Test("serve exits 1 naming the reason when its ingest port is taken, instead of hanging with the admin port open")
    func portTaken() async throws {
        let directory = TestPaths.temporaryDirectory("port-taken")
        let config = directory + "/sources.yaml"
        let taken = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(taken.localAddress?.port)
        try
            (testServerSection(listen: "127.0.0.1:\(port)", admin: "127.0.0.1:\(try unusedPort())")
                + """
                sources:
                  inbox: { destinations: [] }
                """).write(toFile: config, atomically: true, encoding: .utf8)
        // `timeout` answers 124 if serve is still running after 60 s.
        let result = try await shell("timeout -s KILL 60 \(Self.hookproxy) serve --config \(config) 2>&1")
        #expect(result.status == 1, "\(result.output)")
        #expect(result.output.contains("Address already in use"), "\(result.output)")
        try await taken.close()
    }

    @Test("--log-format json writes one JSON object per line with level, message and metadata")
    func jsonLogs() async throws {
        let directory = TestPaths.temporaryDirectory("logs")
        let config = directory + "/sources.yaml"
        let (ingest, admin) = (try unusedPort(), try unusedPort())
        try
            (testServerSection(listen: "127.0.0.1:\(ingest)", admin: "127.0.0.1:\(admin)")
                + """
                sources:
                  inbox: { destinations: [] }
                """).write(toFile: config, atomically: true, encoding: .utf8)
        // Until it answers, not for a fixed time: a loaded machine has taken over 2 s to log its first line.
        let child = try await ChildServer(
            config: config, healthURL: "http://127.0.0.1:\(admin)/healthz", log: directory + "/serve.log",
            arguments: ["--log-format", "json"])
        #expect(try await child.terminate() == 0)
        let lines = try String(contentsOfFile: directory + "/serve.log", encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(!lines.isEmpty)
        for line in lines {
            let object = try JSONValue(parsing: Array(line.utf8))
            #expect(
                object["level"]?.stringValue != nil && object["message"]?.stringValue != nil && object["time"]?.stringValue != nil,
                "\(line)")
        }
        let starting = lines.compactMap { try? JSONValue(parsing: Array($0.utf8)) }.first { $0["message"] == "hookproxy starting" }
        #expect(starting?["listen"]?.stringValue == "127.0.0.1:\(ingest)")
        #expect(try await Self.run("serve --config \(config) --log-format yaml").status == 2)
    }
}
