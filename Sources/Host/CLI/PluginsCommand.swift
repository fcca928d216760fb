import ArgumentParser
import Foundation
import Logging
import PluginKit

/// `hookproxy plugins`: lists the plugins hookproxy finds, how each runs (isolation, deadline, memory, workers), the
/// health of their workers when a server is running, and the files it refuses.
struct PluginsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugins",
        abstract:
            "List plugins: name, version, capabilities, ABI version, isolation and worker health (from a running server), file; and refused files."
    )

    @OptionGroup var options: GlobalOptions

    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    func run() async throws {
        var logger = options.bootstrapLogging()
        logger.logLevel = .error
        // The plugins directory comes from the configuration when there is one; else ./plugins.
        var pluginsConfig = PluginsConfig(directory: ConfigLoader.resolvePath("plugins", base: FileManager.default.currentDirectoryPath))
        var server: ServerConfig?
        if FileManager.default.fileExists(atPath: options.configFile) {
            let config = try options.loadConfig()
            pluginsConfig = config.plugins
            server = config.server
        }
        // A running server knows its workers' health; without one, the plugins are discovered here.
        var listing: JSONValue?
        if let server { listing = try? await AdminClient(server: server).get("/admin/plugins") }
        let fromServer = listing != nil
        if listing == nil {
            let catalog = await PluginLoader.discover(
                directory: pluginsConfig.directory, memoryLimit: pluginsConfig.defaults.memoryLimit, logger: logger)
            listing = EventJSON.plugins(catalog, settings: pluginsConfig.settings(for:), health: [:])
        }
        let body = listing ?? [:]
        if json {
            print(body.serialized())
            return
        }
        let plugins = body["plugins"]?.arrayValue ?? []
        let rows =
            [["NAME", "VERSION", "CAPABILITIES", "ABI", "ISOLATION", "WORKERS", "STATE", "CRASHES", "TIMEOUTS", "RESTARTS", "FILE"]]
            + plugins.map { plugin in
                let health = plugin["health"].flatMap { $0.isNull ? nil : $0 }
                let workers = health.map { "\($0["running"]?.textValue ?? "0")/\(plugin["workers"]?.textValue ?? "")" } ?? "-"
                let state = health?["state"]?.textValue ?? (fromServer ? "unused" : "-")
                return [
                    plugin["name"]?.textValue ?? "", plugin["version"]?.textValue ?? "",
                    (plugin["capabilities"]?.arrayValue ?? []).map(\.textValue).joined(separator: ","),
                    plugin["abi_version"]?.textValue ?? "",
                    plugin["isolation"]?.textValue ?? "", workers, state, health?["crashes"]?.textValue ?? "-",
                    health?["timeouts"]?.textValue ?? "-", health?["restarts"]?.textValue ?? "-", plugin["file"]?.textValue ?? "",
                ]
            }
        print(TextTable.render(rows))
        if plugins.isEmpty { print("(no plugins found in \(pluginsConfig.directory) or beside the executable)") }
        for plugin in plugins {
            if let failure = plugin["health"]?["last_failure"], !failure.isNull {
                print(
                    "last failure of \(plugin["name"]?.textValue ?? ""): \(failure["at"]?.textValue ?? "") \(failure["reason"]?.textValue ?? "")"
                )
            }
        }
        for refusal in body["refused"]?.arrayValue ?? [] {
            print("refused: \(refusal["file"]?.textValue ?? ""): \(refusal["reason"]?.textValue ?? "")")
        }
        if !fromServer, server != nil { print("(no server answered on the admin listener: worker health is not shown)") }
    }
}

/// Plain aligned text tables for the CLI.
enum TextTable {
    static func render(_ rows: [[String]]) -> String {
        guard let columns = rows.map(\.count).max() else { return "" }
        let widths = (0..<columns).map { column in rows.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
