import ArgumentParser
import Foundation
import NIOPosix

/// `hookproxy-bench`: starts release builds of hookproxy with a generated configuration and a sink on loopback, runs
/// the scenarios of docs/benchmarks.md and prints one table. `scripts/benchmark` builds and runs it.
@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hookproxy-bench",
        abstract: "Measure hookproxy: ingest, ceiling, pipeline, drain, backlog and startup (see docs/benchmarks.md).")

    @Option(help: "Scenarios to run, comma-separated: \(Scenario.allCases.map(\.rawValue).joined(separator: ",")).")
    var only: String = Scenario.standard.map(\.rawValue).joined(separator: ",")

    @Flag(
        help: """
            After the scenarios, search for the highest constant rate whose end-to-end p99 stays within 50 ms (the \
            find-rate scenario; about ten runs of --find-rate-seconds).
            """)
    var findRate = false

    @Option(help: "Seconds of each step of the find-rate search.")
    var findRateSeconds = 10.0

    @Flag(help: "A smoke run of a few seconds: every scenario, tiny sizes. Its numbers mean nothing.")
    var quick = false

    @Option(help: "Connections of the maximum-throughput runs (ingest, ceiling).")
    var connections = 64

    @Option(help: "Seconds of each maximum-throughput run, after a warm-up of a fifth of it.")
    var seconds = 10.0

    @Option(help: "Events per second of the pipeline run.")
    var rate = 2000.0

    @Option(help: "Seconds of the pipeline run.")
    var pipelineSeconds = 30.0

    @Option(help: "max_concurrency of the benchmark's Discord destination (the default of sources.yaml is 8).")
    var maxConcurrency = 8

    @Option(help: "Deliveries queued before the drain run's sink comes up.")
    var drainCount = 100_000

    @Option(help: "Events queued for the backlog run.")
    var backlogCount = 1_000_000

    @Flag(help: "Also count the server's instructions per request and per delivery with perf stat (Debian's linux-perf).")
    var instructions = false

    @Flag(
        help: """
            Record a CPU profile (perf record -g, by CPU clock) of the servers and their plugin workers during each \
            measured ingest, ceiling and drain run, into the work directory (profile-<run>.data; read it with perf report -i).
            """)
    var profile = false

    @Flag(
        help: """
            Also print, for each pipeline run, the worst end-to-end latency (ms) in each 100 ms of intended send time: a \
            tail shows as a ramp (the deliveries fell behind for a while) or a spike (a stall).
            """)
    var timeline = false

    @Option(
        help: """
            Store events in PostgreSQL instead of SQLite: postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=disable. \
            Each server start gets a new database created through this URL (the role needs CREATEDB), dropped at the end.
            """)
    var postgres: String?

    @Option(help: "hookproxy instances on one PostgreSQL database for ingest, ceiling, pipeline and drain (needs --postgres).")
    var instances = 1

    @Option(help: "Where hookproxy and its plugins are (default: beside this program).")
    var binaries: String?

    @Option(help: "Working directory for databases, configs and logs (default: a new one under /tmp, removed after).")
    var workDirectory: String?

    func run() async throws {
        var scenarios = try only.split(separator: ",").map { name in
            guard let scenario = Scenario(rawValue: String(name)) else { throw ValidationError("unknown scenario '\(name)'") }
            return scenario
        }
        if findRate, !scenarios.contains(.findRate) { scenarios.append(.findRate) }
        guard instances >= 1 else { throw ValidationError("--instances must be at least 1") }
        if instances > 1 {
            guard postgres != nil else { throw ValidationError("--instances \(instances) needs --postgres: SQLite has one process") }
            let single = scenarios.filter { [.startup, .backlog, .findRate].contains($0) }
            guard single.isEmpty else {
                throw ValidationError(
                    "--instances applies to ingest, ceiling, pipeline and drain; leave out \(single.map(\.rawValue).joined(separator: ","))"
                )
            }
        }
        var sizes = Sizes(
            connections: connections, seconds: seconds, rate: rate, pipelineSeconds: pipelineSeconds, drainCount: drainCount,
            backlogCount: backlogCount, startups: 5, maxConcurrency: maxConcurrency, instructions: instructions, profile: profile,
            instances: instances,
            findRateSeconds: findRateSeconds, findRatePrecision: 0.05)
        if quick {
            sizes = Sizes(
                connections: 4, seconds: 0.5, rate: 100, pipelineSeconds: 1, drainCount: 200, backlogCount: 500, startups: 2,
                maxConcurrency: maxConcurrency, instructions: instructions, profile: profile, instances: instances, findRateSeconds: 0.5,
                findRatePrecision: 0.25)
        }
        sizes.timeline = timeline
        let directory =
            binaries ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        let work = workDirectory ?? NSTemporaryDirectory() + "hookproxy-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { if workDirectory == nil { try? FileManager.default.removeItem(atPath: work) } }

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let databases = try BenchDatabases(postgres: postgres, work: work)
        let database = try await databases.serverVersion()
        let bench = try await Bench(directory: directory, work: work, sizes: sizes, databases: databases, group: group)
        print(Machine.describe(binaries: directory, work: work, sizes: sizes, database: database, quick: quick))
        print("")
        var rows: [Row] = []
        for scenario in scenarios {
            FileHandle.standardError.write(Data("running \(scenario.rawValue)…\n".utf8))
            let produced = try await bench.run(scenario)
            rows += produced
            for row in produced { FileHandle.standardError.write(Data("  \(row.scenario): \(row.measured)\n".utf8)) }
        }
        rows += bench.ratioRows()
        await bench.finish()
        try await group.shutdownGracefully()
        print(Row.table(rows))
        if rows.contains(where: { $0.verdict == .missed }) && !quick { throw ExitCode(1) }
    }
}

enum Scenario: String, CaseIterable {
    case startup, ingest, ceiling, pipeline, drain, backlog
    case findRate = "find-rate"

    /// What runs unless `--only` says otherwise (find-rate takes minutes: `--find-rate`).
    static let standard: [Scenario] = [.startup, .ingest, .ceiling, .pipeline, .drain, .backlog]
}

struct Sizes {
    var connections: Int
    var seconds: Double
    var rate: Double
    var pipelineSeconds: Double
    var drainCount: Int
    var backlogCount: Int
    var startups: Int
    var maxConcurrency: Int
    var instructions: Bool
    /// Record a perf profile of each measured run.
    var profile = false
    /// hookproxy processes sharing one PostgreSQL database in the scenarios that allow several.
    var instances: Int
    /// Seconds of each step of the find-rate search.
    var findRateSeconds: Double
    /// The search stops when the bracket is narrower than this share of the ingest throughput.
    var findRatePrecision: Double
    /// Print each pipeline run's worst end-to-end latency per 100 ms.
    var timeline = false
}

/// One line of the result table.
struct Row {
    enum Verdict: String {
        case met = "met"
        case missed = "MISSED"
        case info = ""
    }

    var scenario: String
    var measured: String
    var target: String
    var verdict: Verdict

    init(_ scenario: String, _ measured: String, target: String = "", met: Bool? = nil) {
        self.scenario = scenario
        self.measured = measured
        self.target = target
        self.verdict = met.map { $0 ? .met : .missed } ?? .info
    }

    /// A Markdown table, so a run can be pasted into docs/benchmarks.md as it is.
    static func table(_ rows: [Row]) -> String {
        var lines = ["| scenario | measured | target | |", "|---|---|---|---|"]
        for row in rows { lines.append("| \(row.scenario) | \(row.measured) | \(row.target) | \(row.verdict.rawValue) |") }
        return lines.joined(separator: "\n")
    }
}
