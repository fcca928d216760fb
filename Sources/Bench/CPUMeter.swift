import Foundation

/// The servers' CPU time over a stretch of a run and, with `--instructions`, the instructions their threads retired
/// (`perf stat`). On a shared machine the time per request varies by tens of percent from run to run; the instruction
/// count varies by a few, so it is what to compare when judging a change. With `database`, the CPU time of this
/// machine's PostgreSQL processes is measured too.
final class CPUMeter {
    private let servers: [ServerProcess]
    private let startSeconds: Double
    private let startWorkers: [Int32: Double]
    private let database: Bool
    private let startDatabase: [Int32: Double]
    private let perf: Process?
    private let perfInput = Pipe()
    private let output: String

    /// Starts measuring now. `instructions` attaches `perf stat` to the servers (from Debian's linux-perf).
    init(_ servers: [ServerProcess], instructions: Bool, database: Bool = false, work: String) throws {
        self.servers = servers
        self.database = database
        output = work + "/perf-\(servers[0].pid)-\(UUID().uuidString.prefix(8)).csv"
        if instructions {
            let perf = Process()
            perf.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            // perf counts the server while `cat` runs; closing its input stops both. (A signal would not do: children of
            // Foundation's Process start with every signal blocked.)
            perf.arguments = [
                "perf", "stat", "-x", ",", "-e", "instructions,task-clock", "-o", output, "-p",
                (servers.map(\.pid) + servers.flatMap { $0.workers() }).map(String.init).joined(separator: ","), "--", "cat",
            ]
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
