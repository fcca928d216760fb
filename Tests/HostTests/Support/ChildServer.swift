import Foundation
import Synchronization

@testable import Host

/// The real `hookproxy serve` executable as a child process, for tests that kill it.
final class ChildServer: Sendable {
    let process: Process
    let log: String

    /// Starts `hookproxy serve --config FILE` and waits until `healthURL` answers. With `dataLimit` (bytes) the
    /// process's data segment is capped (`ulimit -d`), for plugins that allocate without end in process.
    init(
        config: String, healthURL: String, log: String, dataLimit: Int? = nil, environment: [String: String] = [:],
        arguments extra: [String] = []
    ) async throws {
        let executable = PluginLoader.executableDirectory + "/hookproxy"
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw TimedOut(what: "the hookproxy executable at \(executable) (run swift build first)")
        }
        let process = Process()
        let arguments = ["serve", "--config", config, "--log-level", "info"] + extra
        if let dataLimit {
            // `exec` keeps the pid: signals go to hookproxy itself.
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "ulimit -d \(dataLimit / 1024) && exec \"$0\" \"$@\"", executable] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        }
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        // Appended to: one log for every start of a test's server.
        if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil) }
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

    /// Waits for the process to end by itself (a plugin crashed it); returns how it ended.
    func waitForExit(timeout: Duration = .seconds(30)) async throws -> (status: Int32, signaled: Bool) {
        try await waitUntil("hookproxy to end by itself", timeout: timeout) { !self.process.isRunning }
        return (process.terminationStatus, process.terminationReason == .uncaughtSignal)
    }

    /// The plugin worker processes this server started that are still alive.
    var workers: [Int32] {
        let parent = "--parent \(process.processIdentifier) "
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return pids.compactMap { Int32($0) }.filter { pid in
            guard let command = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            return String(decoding: command.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).contains("plugin-worker " + parent)
        }
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
