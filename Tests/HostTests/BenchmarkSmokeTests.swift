import Foundation
import Testing

@testable import Host

/// The benchmark program is not part of the suite (docs/benchmarks.md), but a few seconds of it are: every scenario
/// runs against the debug build at tiny sizes, so the program cannot rot unnoticed.
@Suite("Benchmark smoke run")
struct BenchmarkSmokeTests {
    /// The debug build's hookproxy-bench.
    static func bench(in directory: String) throws -> String {
        let bench = directory + "/hookproxy-bench"
        guard FileManager.default.isExecutableFile(atPath: bench) else {
            throw Missing(description: "no hookproxy-bench at \(bench) (run swift build first)")
        }
        return bench
    }

    @Test("hookproxy-bench --quick --find-rate --timeline runs every scenario and prints its table, the ratios and the machine")
    func quickRun() async throws {
        let directory = PluginLoader.executableDirectory
        let bench = try Self.bench(in: directory)
        let (status, output) = try await shell("'\(bench)' --quick --find-rate --timeline --binaries '\(directory)' 2>&1")
        #expect(status == 0, "\(output)")
        #expect(output.contains("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores"), "\(output)")
        for scenario in [
            "startup to ready", "idle RSS", "ingest:", "ceiling:", "pipeline, plugins isolated: end to end",
            "pipeline, plugins in process: end to end", "drain, plugins isolated:", "drain, plugins in process:",
            "drain: isolated against in process", "backlog: RSS holding", "find-rate: highest constant rate",
            "ratio: ingest throughput / no-op ceiling", "ratio: CPU per delivery / CPU per ingested request",
            "ratio: drain throughput / ingest throughput", "ratio: highest rate with end-to-end p99 ≤ 50 ms / ingest throughput",
        ] {
            #expect(output.contains("| \(scenario)"), "no row '\(scenario)' in:\n\(output)")
        }
        // Tiny sizes, but real traffic: nothing may go missing or fail.
        #expect(output.contains("100 sent, 0 missing, 0 duplicates, 0 errors at ingest"), "\(output)")
        #expect(output.contains("worst end to end per 100 ms, ms: "), "\(output)")
        #expect(!output.contains("no answer"), "\(output)")
        // Each measured run counts the server's and its workers' context switches (a count, steadier than CPU time).
        #expect(output.contains("context switches/delivery"), "\(output)")
        #expect(output.contains("context switches/req"), "\(output)")
    }

    @Test(
        "hookproxy-bench --quick --postgres --instances 2 runs the scale-out scenarios on one database, then drops it",
        .enabled(if: TestBackend.postgresEnabled))
    func quickRunOnPostgres() async throws {
        let directory = PluginLoader.executableDirectory
        let bench = try Self.bench(in: directory)
        let (status, output) = try await shell(
            "'\(bench)' --quick --binaries '\(directory)' --postgres '\(TestBackend.postgresURL)' --instances 2 --only ingest,pipeline,drain 2>&1"
        )
        #expect(status == 0, "\(output)")
        #expect(output.contains("server: 2 instances on PostgreSQL"), "\(output)")
        for scenario in [
            "ingest:", "pipeline, plugins isolated: end to end", "pipeline, plugins in process: end to end", "drain, plugins isolated:",
            "drain, plugins in process:", "drain: isolated against in process",
        ] {
            #expect(output.contains("| \(scenario)"), "no row '\(scenario)' in:\n\(output)")
        }
        #expect(output.contains("2 instances |"), "\(output)")
        #expect(output.contains("+ PostgreSQL"), "the database's CPU is not reported:\n\(output)")
        #expect(output.contains("100 sent, 0 missing, 0 duplicates, 0 errors at ingest"), "\(output)")
        #expect(output.contains("200 queued deliveries"), "\(output)")
    }
}

struct Missing: Error, CustomStringConvertible {
    var description: String
}
