import Foundation
import HostShims

/// A PostgreSQL server of one test's own, for tests that crash and restart the database: the shared server of
/// `HOOKPROXY_TEST_POSTGRES_URL` serves the whole parallel suite and cannot be restarted under it.
///
/// Made with the `initdb` and `pg_ctl` of the installed PostgreSQL (Debian's `/usr/lib/postgresql/N/bin`, or `PATH`),
/// listening on 127.0.0.1 on a port of its own, with trust authentication for the superuser `hookproxy`. PostgreSQL
/// refuses to run as root: as root, its tools run as the `postgres` user (`runuser`).
struct PrivateCluster: Sendable {
    let directory: String
    let port: Int
    private let binDirectory: String

    /// The database hookproxy uses on it.
    var url: String { "postgres://hookproxy@127.0.0.1:\(port)/postgres?sslmode=disable" }

    /// Creates the cluster and starts it.
    static func start() async throws -> PrivateCluster {
        let candidates =
            ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? [])
            .sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }.map { "/usr/lib/postgresql/\($0)/bin" }
            + (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        guard let bin = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0 + "/initdb") }) else {
            throw PostgresUnavailable(reason: "no initdb in /usr/lib/postgresql/*/bin or PATH (install Debian's postgresql package)")
        }
        // Not created here: initdb makes it, owned by the user the server runs as.
        let directory = NSTemporaryDirectory() + "hookproxy-pg-\(UUID().uuidString.prefix(8))"
        let cluster = PrivateCluster(directory: directory, port: try unusedPort(), binDirectory: bin)
        try await cluster.run("initdb", ["-D", directory, "-U", "hookproxy", "--auth=trust", "--no-sync", "-E", "UTF8"])
        try await cluster.resume()
        return cluster
    }

    /// Runs `body` with a new cluster, stopped and deleted afterwards.
    static func with(_ body: (PrivateCluster) async throws -> Void) async throws {
        let cluster = try await start()
        do {
            try await body(cluster)
        } catch {
            await cluster.remove()
            throw error
        }
        await cluster.remove()
    }

    /// Starts the server on its data directory again and waits until it accepts connections.
    func resume() async throws {
        try await run(
            "pg_ctl",
            [
                "-D", directory, "-l", directory + "/server.log", "-w", "-t", "30",
                "-o", "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c max_connections=100", "start",
            ])
    }

    /// Stops the server as a crash would: no checkpoint, every connection cut. Committed data is in the WAL.
    func crash() async throws {
        try await run("pg_ctl", ["-D", directory, "-m", "immediate", "-w", "stop"])
    }

    /// Stops the server and deletes its files.
    func remove() async {
        try? await run("pg_ctl", ["-D", directory, "-m", "immediate", "-w", "stop"])
        try? FileManager.default.removeItem(atPath: directory)
        try? FileManager.default.removeItem(atPath: toolLog)
    }

    /// What initdb and pg_ctl printed (a failure's message quotes its end).
    private var toolLog: String { NSTemporaryDirectory() + "hookproxy-pg-\(port).log" }

    /// Runs one of the PostgreSQL tools and waits for it to exit.
    ///
    /// With `posix_spawn` and `waitpid`, not Foundation's `Process`: `pg_ctl start` leaves the server running, and the
    /// server inherits the descriptor by which `Process` learns that its child exited, so `Process` would wait for the
    /// server to stop.
    private func run(_ tool: String, _ arguments: [String]) async throws {
        // From /tmp, a directory the postgres user may enter.
        let user = getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : []
        let command = user + ["/bin/sh", "-c", #"cd /tmp && exec "$0" "$@""#, binDirectory + "/" + tool] + arguments
        let log = toolLog
        // waitpid blocks: on a thread of its own, not one of the few the concurrency runtime has.
        let status = try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try Self.spawnAndWait(command, log: log) }) }.start()
        }
        guard status == 0 else {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw PostgresUnavailable(reason: "\(tool) exited with \(status): \(text.suffix(2000))")
        }
    }

    /// The exit status of `command`, its output appended to `log`.
    private static func spawnAndWait(_ command: [String], log: String) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else of this process's: the server would keep every descriptor it inherited for as long as it runs,
        // among them listening sockets (NIO's are not close-on-exec). One was a port `unusedPort()` was probing at that
        // instant, so the test given that port found it taken by PostgreSQL ("Address already in use").
        guard hp_spawn_actions_close_from(&actions, 3) == 0 else {
            throw PostgresUnavailable(reason: "cannot prepare to run \(command[0])")
        }
        let arguments = command.map { strdup($0) } + [nil]
        defer { for argument in arguments { free(argument) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, command[0], &actions, nil, arguments, environ)
        guard spawned == 0 else { throw PostgresUnavailable(reason: "cannot run \(command[0]): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        // WIFEXITED and WEXITSTATUS, which Swift does not import.
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}
