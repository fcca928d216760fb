import ArgumentParser
import Foundation
import Logging
import PluginKit

/// `hookproxy plugins`: lists the plugins hookproxy finds, and the files it refuses.
struct PluginsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugins",
        abstract: "List discovered plugins: name, version, capabilities, ABI version, file (and refused files).")

    @OptionGroup var options: GlobalOptions

    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    func run() async throws {
        var logger = options.bootstrapLogging()
        logger.logLevel = .error
        // The plugins directory comes from the configuration when there is one; else ./plugins.
        let directory: String
        if FileManager.default.fileExists(atPath: options.configFile) {
            directory = try options.loadConfig().plugins.directory
        } else {
            directory = ConfigLoader.resolvePath("plugins", base: FileManager.default.currentDirectoryPath)
        }
        let catalog = PluginLoader.discover(directory: directory, logger: logger)
        let plugins = catalog.plugins.values.sorted { $0.name < $1.name }
        if json {
            let list = EventJSON.plugins(catalog)
            print(list.serialized())
            return
        }
        let rows =
            [["NAME", "VERSION", "CAPABILITIES", "ABI", "FILE"]]
            + plugins.map { [$0.name, $0.version, $0.capabilityNames.joined(separator: ","), String($0.abiVersion), $0.file] }
        print(TextTable.render(rows))
        if plugins.isEmpty { print("(no plugins found in \(directory) or beside the executable)") }
        for refusal in catalog.refusals { print("refused: \(refusal.file): \(refusal.reason)") }
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
