import Foundation

/// The servers' CPU time over a stretch of a run and, with `--instructions`, the instructions their threads retired
/// (`perf stat`). On a shared machine the time per request varies by tens of percent from run to run; the instruction
/// count varies by a few, so it is what to compare when judging a change. With `database`, the CPU time of this
/// machine's PostgreSQL processes is measured too.
final class CPUMeter {
    private let servers: [ServerProcess]
    private let startSeconds: Double
    private let startWorkers: [Int32: Double]
    private let startSwitches: Int
    private let database: Bool
    private let startDatabase: [Int32: Double]
    private let perf: Process?
    private let perfInput = Pipe()
    private let output: String
    /// Where `perf record` writes, with `profile`, and its process.
    private var profilePath: String?
    private var recorder: pid_t?

    /// Starts measuring now. `instructions` attaches `perf stat` to the servers (from Debian's linux-perf); `profile`
    /// attaches `perf record` (call graphs, by CPU clock) and writes the profile to `work/profile-<profile>.data`.
    init(_ servers: [ServerProcess], instructions: Bool, profile: String? = nil, database: Bool = false, work: String) throws {
        self.servers = servers
        self.database = database
        output = work + "/perf-\(servers[0].pid)-\(UUID().uuidString.prefix(8)).csv"
        let pids = (servers.map(\.pid) + servers.flatMap { $0.workers() }).map(String.init).joined(separator: ",")
        if let profile {
            let path = work + "/profile-\(profile).data"
            profilePath = path
            recorder = try Self.spawnWithSignals(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-g", "-o", path, "-p", pids])
            // perf attaches to every thread of the process before recording; give it that moment.
            usleep(200_000)
        }
        if instructions {
            let perf = Process()
            perf.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            // perf measures the server while `cat` runs; closing its input stops both. (A signal would not do: children of
            // Foundation's Process start with every signal blocked.)
            perf.arguments = ["perf", "stat", "-x", ",", "-e", "instructions,task-clock", "-o", output, "-p", pids, "--", "cat"]
            perf.standardInput = perfInput
            perf.standardOutput = FileHandle.nullDevice
            perf.standardError = FileHandle.nullDevice
            do {
                try perf.run()
            } catch {
                throw BenchError("--instructions needs perf (apt-get install linux-perf): \(error)")
            }
            // perf attaches to every thread of the process before counting; give it that moment.
            usleep(200_000)
            guard perf.isRunning else {
                throw BenchError(
                    "--instructions: perf stat exited at once (status \(perf.terminationStatus)); is perf_event_paranoid too strict?")
            }
            self.perf = perf
        } else {
            perf = nil
        }
        startSeconds = servers.map { $0.cpuSeconds() }.reduce(0, +)
        startWorkers = servers.map { $0.workerCPUSeconds() }.reduce(into: [:]) { $0.merge($1) { $1 } }
        startDatabase = database ? Self.postgresProcesses() : [:]
        startSwitches = servers.map { $0.contextSwitches() }.reduce(0, +)
    }

    /// CPU seconds of every process named `postgres` on this machine (the server and its backends), by pid.
    private static func postgresProcesses() -> [Int32: Double] {
        var found: [Int32: Double] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry),
                let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")"),
                stat[stat.index(after: open)..<close].hasPrefix("postgres")
            else { continue }
            found[pid] = ServerProcess.cpuSeconds(stat: stat)
        }
        return found
    }

    /// The server's and its plugin workers' CPU per unit so far, in microseconds (workers started meanwhile count from 0).
    func microseconds(per units: Int) -> (server: Double, workers: Double) {
        let divisor = Double(max(1, units))
        let server = servers.map { $0.cpuSeconds() }.reduce(0, +) - startSeconds
        let workers = servers.flatMap { $0.workerCPUSeconds() }.map { pid, total in total - (startWorkers[pid] ?? 0) }.reduce(0, +)
        return (server * 1e6 / divisor, workers * 1e6 / divisor)
    }

    /// The CPU of this machine's PostgreSQL processes per unit so far, in microseconds (0 without `database`).
    func databaseMicroseconds(per units: Int) -> Double {
        guard database else { return 0 }
        // Backends that exited meanwhile are not counted; the pools keep theirs open.
        let used = Self.postgresProcesses().map { pid, total in total - (startDatabase[pid] ?? 0) }.reduce(0, +)
        return used * 1e6 / Double(max(1, units))
    }

    /// Stops measuring and describes the cost of each of `units` (answered requests or deliveries), for example
    /// "190 µs" or "190 µs, 1.52 M instructions"; the plugin workers' part is given when there is one.
    func perUnit(_ units: Int) -> String {
        let divisor = Double(max(1, units))
        let (server, workers) = microseconds(per: units)
        var text = String(format: "%.0f µs", server + workers)
        if workers > 0 { text += String(format: " (plugin workers %.0f µs of it)", workers) }
        if database { text += String(format: " + PostgreSQL %.0f µs", databaseMicroseconds(per: units)) }
        let switches = servers.map { $0.contextSwitches() }.reduce(0, +) - startSwitches
        text += String(format: ", %.1f context switches", Double(switches) / divisor)
        if let recorder, let profilePath {
            // perf record writes its file out on SIGINT.
            kill(recorder, SIGINT)
            var status: Int32 = 0
            waitpid(recorder, &status, 0)
            self.recorder = nil
            print("  profile: perf report -i \(profilePath)")
        }
        if let perf {
            try? perfInput.fileHandleForWriting.close()
            perf.waitUntilExit()
            if let instructions = Self.instructions(in: output) {
                text += String(format: ", %.2f M instructions", instructions / divisor / 1e6)
            } else {
                text += ", instructions not counted (see \(output))"
            }
        }
        return text
    }

    /// Starts `arguments` (found on PATH) with no signal blocked, its output to /dev/null. Foundation's `Process` starts
    /// children with every signal blocked, and `perf record` only finishes its file on SIGINT.
    private static func spawnWithSignals(_ arguments: [String]) throws -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var pid: pid_t = 0
        let argv = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let result = posix_spawnp(&pid, arguments[0], &actions, &attributes, argv, environ)
        guard result == 0 else {
            throw BenchError("--profile needs perf (apt-get install linux-perf): cannot start it (\(String(cString: strerror(result))))")
        }
        return pid
    }

    /// The instruction count of a `perf stat -x ,` output file: the first field of the `instructions` line.
    private static func instructions(in path: String) -> Double? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            if fields.count > 2, fields[2].hasPrefix("instructions"), let value = Double(fields[0]) { return value }
        }
        return nil
    }
}
