import Foundation
import PluginKit
import Testing

@testable import Host

/// Compiles the C fixture with `cc` against the ABI header alone.
func compileCPlugin(
    into directory: String, file: String = "libminimal.so", source: String = "minimal_formatter.c", defines: [String] = []
) async throws -> String {
    let output = directory + "/" + file
    let flags = defines.map { "'-D\($0)'" }.joined(separator: " ")
    let result = try await shell(
        "cc -shared -fPIC -Wall -Werror -std=c11 -D_GNU_SOURCE -I '\(TestPaths.abiInclude)' \(flags) -o '\(output)' '\(TestPaths.fixtures)/\(source)'"
    )
    guard result.status == 0 else { throw TimedOut(what: "cc to succeed: \(result.output)") }
    return output
}

@Suite("Plugin ABI")
struct PluginABITests {
    @Test("the four shipped plugins load from beside the executable with their declared names and capabilities")
    func shippedPluginsLoad() async throws {
        let catalog = await shippedPlugins()
        for name in ["discord", "slack", "generic", "github"] {
            let plugin = try #require(catalog.plugins[name], "plugin \(name) not found; refusals: \(catalog.refusals)")
            #expect(name == "github" ? plugin.isMapper && !plugin.isFormatter : plugin.isFormatter)
            #expect(plugin.abiVersion == 1)
            #expect(plugin.file.hasSuffix("/libhookproxy-\(name).so"))
            #expect(plugin.version.split(separator: ".").count == 3 && plugin.version.split(separator: ".").allSatisfy { Int($0) != nil })
        }
        #expect(catalog.refusals.isEmpty)
    }

    @Test("a C formatter compiled against the header alone loads, formats and frees its output")
    func cFormatterLoadsAndFormats() async throws {
        let directory = TestPaths.temporaryDirectory("cplugin")
        _ = try await compileCPlugin(into: directory)
        let catalog = await discoverPlugins(directory)
        let plugin = try #require(catalog.plugins["minimal"])
        #expect(plugin.capabilityNames == ["formatter"])
        for isolation in PluginIsolation.allCases {
            let instance = try await pluginInstance(plugin, isolation: isolation)
            let document: JSONValue = ["id": "e1", "source": "s", "fields": ["a": "b"]]
            guard
                case .send(let body, let contentType, let headers) = await instance.format(
                    document: document.serializedBytes(), body: [1, 2], contentType: "x/y")
            else {
                Issue.record("the C plugin did not send (\(isolation))")
                return
            }
            #expect(String(decoding: body, as: UTF8.self) == "minimal:" + document.serialized())
            #expect(contentType == "text/plain")
            #expect(headers.map { "\($0.name)=\($0.value)" } == ["X-Minimal=1"])
        }
    }

    @Test("a plugin that rejects its options fails instance creation with its own message")
    func rejectedOptions() async throws {
        let directory = TestPaths.temporaryDirectory("cplugin")
        _ = try await compileCPlugin(into: directory, defines: ["PLUGIN_NAME=\"picky\""])
        let plugin = try #require(await discoverPlugins(directory).plugins["picky"])
        for isolation in PluginIsolation.allCases {
            do {
                _ = try await pluginInstance(plugin, options: ["reject": true], isolation: isolation)
                Issue.record("the options were accepted (\(isolation))")
            } catch {
                #expect(error.message == "minimal: option 'reject' is set")
            }
        }
    }

    @Test("a plugin built for another ABI version is refused, naming the file and both versions")
    func abiMismatchRefused() async throws {
        let directory = TestPaths.temporaryDirectory("cplugin")
        let file = try await compileCPlugin(
            into: directory, file: "libfuture.so", defines: ["TABLE_ABI_VERSION=99", "PLUGIN_NAME=\"future\""])
        let catalog = await discoverPlugins(directory)
        #expect(catalog.plugins["future"] == nil)
        let refusal = try #require(catalog.refusals.first { $0.file.hasSuffix("/libfuture.so") })
        #expect(
            refusal.description
                == "plugin \(refusal.file) refused: it was built for plugin ABI version 99, this hookproxy speaks ABI version 1")
        #expect(refusal.file == URL(fileURLWithPath: file).resolvingSymlinksInPath().path)
    }

    @Test("a library without the entry symbol is refused with a clear reason")
    func missingEntryRefused() async throws {
        let directory = TestPaths.temporaryDirectory("cplugin")
        _ = try await compileCPlugin(into: directory, file: "libnotaplugin.so", defines: ["NO_ENTRY"])
        let catalog = await discoverPlugins(directory)
        let refusal = try #require(catalog.refusals.first { $0.file.hasSuffix("/libnotaplugin.so") })
        #expect(refusal.reason == "it does not export the entry symbol 'hookproxy_plugin_entry' (is it a hookproxy plugin?)")
    }

    @Test("a second plugin with a name already loaded is refused as a duplicate")
    func duplicateNameRefused() async throws {
        let directory = TestPaths.temporaryDirectory("cplugin")
        _ = try await compileCPlugin(into: directory, file: "liba.so", defines: ["PLUGIN_NAME=\"twin\""])
        _ = try await compileCPlugin(into: directory, file: "libb.so", defines: ["PLUGIN_NAME=\"twin\""])
        let catalog = await discoverPlugins(directory)
        #expect(catalog.plugins["twin"]?.file.hasSuffix("/liba.so") == true)
        let refusal = try #require(catalog.refusals.first { $0.file.hasSuffix("/libb.so") })
        #expect(refusal.reason.hasPrefix("duplicate plugin name 'twin' (already loaded from "))
    }

    @Test("a file that is not a shared library is refused, not fatal")
    func garbageFileRefused() async throws {
        let directory = TestPaths.temporaryDirectory("cplugin")
        try "not an ELF file".write(toFile: directory + "/libjunk.so", atomically: true, encoding: .utf8)
        let catalog = await discoverPlugins(directory)
        let refusal = try #require(catalog.refusals.first { $0.file.hasSuffix("/libjunk.so") })
        #expect(refusal.reason.hasPrefix("cannot be loaded: "))
        #expect(catalog.plugins["discord"] != nil)
    }

    @Test("the server starts beside a refused plugin no destination needs; check fails when one needs it")
    func refusedPluginOnlyMattersWhenNeeded() async throws {
        let directory = TestPaths.temporaryDirectory("refused")
        try FileManager.default.createDirectory(atPath: directory + "/plugins", withIntermediateDirectories: true)
        _ = try await compileCPlugin(
            into: directory + "/plugins", file: "libfuture.so", defines: ["TABLE_ABI_VERSION=99", "PLUGIN_NAME=\"future\""])
        let sink = "http://127.0.0.1:9/unused"
        let fine =
            testServerSection() + """
                destinations:
                  chat: { formatter: discord, url: "\(sink)" }
                sources:
                  app: { destinations: [chat] }
                """
        let server = try await TestServer.start(yaml: fine, directory: directory)
        let health = try await send(.GET, "\(server.adminURL)/healthz")
        #expect(health.status == 200)
        try await server.stop()

        let needsIt =
            testServerSection() + """
                destinations:
                  chat: { formatter: future, url: "\(sink)" }
                sources:
                  app: { destinations: [chat] }
                """
        try needsIt.write(toFile: directory + "/sources.yaml", atomically: true, encoding: .utf8)
        let hookproxy = PluginLoader.executableDirectory + "/hookproxy"
        #expect(FileManager.default.isExecutableFile(atPath: hookproxy), "build the hookproxy executable first (swift build)")
        let check = try await shell("'\(hookproxy)' check --config '\(directory)/sources.yaml'")
        #expect(check.status == 2)
        #expect(check.output.contains("warning: plugin \(directory)/plugins/libfuture.so refused: it was built for plugin ABI version 99"))
        #expect(check.output.contains("\(directory)/sources.yaml:12: destinations.chat.formatter: no loaded plugin is named 'future'"))
    }
}
