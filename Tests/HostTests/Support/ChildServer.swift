import Foundation
import Synchronization

@testable import Host

/// The real `hookproxy serve` executable as a child process, for tests that kill it.
final class ChildServer: Sendable {
    let process: Process
    let log: String

    /// Starts `hookproxy serve --config FILE` and waits until `healthURL` answers.
    init(config: String, healthURL: String, log: String) async throws {
        let executable = PluginLoader.executableDirectory + "/hookproxy"
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw TimedOut(what: "the hookproxy executable at \(executable) (run swift build first)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["serve", "--config", config, "--log-level", "info"]
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        output.seekToEndOfFile()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        self.process = process
        self.log = log
        try await waitUntil("hookproxy to answer at \(healthURL)", timeout: .seconds(30)) {
            guard process.isRunning else {
                throw TimedOut(what: "hookproxy, which exited: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
            }
            return (try? await send(.GET, healthURL).status) == 200
        }
    }

    /// A test that failed before stopping its server leaves no process behind.
    deinit {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
    }

    /// SIGKILL: no shutdown of any kind. Waits for the process to be gone.
    func kill() async throws {
        Foundation.kill(process.processIdentifier, SIGKILL)
        try await waitUntil("hookproxy to die after SIGKILL") { !self.process.isRunning }
    }

    /// SIGTERM, then waits for the exit; returns the exit status.
    func terminate(timeout: Duration = .seconds(30)) async throws -> Int32 {
        Foundation.kill(process.processIdentifier, SIGTERM)
        try await waitUntil("hookproxy to exit after SIGTERM", timeout: timeout) { !self.process.isRunning }
        return process.terminationStatus
    }
}

/// Strings (acknowledged ids, failures) collected from concurrent clients.
final class Collected: Sendable {
    private let ids = Mutex<[String]>([])
    func add(_ id: String) { ids.withLock { $0.append(id) } }
    var all: [String] { ids.withLock { $0 } }
}
