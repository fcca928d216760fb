import ArgumentParser
import Foundation

/// `hookproxy plugin-worker`: the worker process that runs one plugin's calls for a server (or probes plugin files). Not
/// for operators: the server starts it with a socket on descriptor 3 (docs/plugins.md, "Isolation").
struct PluginWorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugin-worker", abstract: "Run plugin calls for a hookproxy server (started by the server itself).",
        shouldDisplay: false)

    @Option(help: "The pid of the hookproxy that started this worker; the worker exits when it is gone.")
    var parent: Int32

    @Option(help: "The cap on the worker's data segment, in bytes (0: none).")
    var memoryLimit: UInt64 = 0

    @Flag(help: "Load each file, report what it is, and exit.")
    var probe = false

    @Argument(help: "The plugin file (several with --probe).")
    var files: [String] = []

    func run() throws {
        let status = PluginWorker.run(parent: parent, memoryLimit: memoryLimit, probe: probe, files: files)
        Foundation.exit(status)
    }
}
