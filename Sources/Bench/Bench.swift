import Foundation
import Histogram
import NIOCore

/// The scenarios. Each starts its own hookproxy (a fresh database) unless it shares ingest's, and stops it after. With
/// `--instances N` (PostgreSQL), ingest, ceiling, pipeline and drain start N of them on one database and spread the load.
final class Bench {
    private let hookproxy: String
    private let work: String
    private let sizes: Sizes
    private let group: any EventLoopGroup
    private let sink: Sink
    private let plugins: String
    private let databases: BenchDatabases
    /// Servers started so far, which numbers their files.
    private var started = 0
    /// The ingest scenario's servers, which the ceiling scenario reuses.
    private var ingestServers: [Server] = []
    /// What this run measured, for the ratios (``ratioRows()``).
    private var measured = Measured()

    /// The numbers the ratios of issue 17 are made of, all from one run.
    struct Measured {
        var ingestThroughput: Double?
        /// Server and plugin-worker CPU per ingested request (µs), and PostgreSQL's.
        var ingestCPU: Double?
        var ingestDatabaseCPU: Double?
        var ceilingThroughput: Double?
        /// Of the drain with plugins isolated (the default).
        var drainThroughput: Double?
        var drainCPU: Double?
        var drainDatabaseCPU: Double?
        /// The highest constant rate whose end-to-end p99 stayed within 50 ms.
        var sustainedRate: Double?
    }

    struct Server {
        var process: ServerProcess
        var ingestPort: Int
        var adminPort: Int
        var config: String
        /// Its `storage.url`.
        var database: String
        var ready: Double

        func stop() { process.stop() }

        func admin(_ method: String, _ path: String) throws {
            guard let answer = BlockingHTTP.request(method, port: adminPort, path: path) else {
                throw BenchError(
                    "\(method) \(path) on the admin port \(adminPort): no answer (run with --work-directory DIR to keep DIR/hookproxy.log)")
            }
            guard (200..<300).contains(answer.status) else {
                throw BenchError("\(method) \(path) on the admin port \(adminPort): HTTP \(answer.status) \(answer.body)")
            }
        }
    }

    init(directory: String, work: String, sizes: Sizes, databases: BenchDatabases, group: any EventLoopGroup) async throws {
        hookproxy = directory + "/hookproxy"
        guard FileManager.default.isExecutableFile(atPath: hookproxy) else {
            throw BenchError("no hookproxy executable at \(hookproxy): build it first (scripts/benchmark does)")
        }
        self.work = work
        self.sizes = sizes
        self.databases = databases
        self.group = group
        // The bundled plugins load from beside the executable; this directory stays empty.
        plugins = work + "/plugins"
        try FileManager.default.createDirectory(atPath: plugins, withIntermediateDirectories: true)
        sink = Sink(group: group)
        try await sink.start()
    }

    func finish() async {
        for server in ingestServers { server.stop() }
        ingestServers = []
        await sink.stop()
        await databases.dropAll()
    }

    func run(_ scenario: Scenario) async throws -> [Row] {
        switch scenario {
        case .startup: try await startup()
        case .ingest: try await ingest()
        case .ceiling: try await ceiling()
        case .pipeline: try await pipeline(isolation: "process") + pipeline(isolation: "in_process")
        case .drain: try await drains()
        case .backlog: try await backlog()
        case .findRate: try await findRate()
        }
    }

    /// Starts hookproxy on a new database (or the store `database`) and waits until it is ready.
    private func start(
        _ name: String, paused: Bool = false, database given: String? = nil, isolation: String = "process"
    ) async throws -> Server {
        started += 1
        let database: String
        if let given { database = given } else { database = try await databases.make(name) }
        let config = "\(work)/\(name)-\(started).yaml"
        // A port picked free can be taken by another process before the server binds it (``unusedPort()``): the server
        // then exits at once, and is started again on new ports.
        for attempt in 1...Self.startTries {
            let ingestPort = unusedPort()
            let adminPort = unusedPort()
            try writeConfig(config, ingestPort: ingestPort, adminPort: adminPort, database: database, paused: paused, isolation: isolation)
            let process = try ServerProcess(
                binary: hookproxy, config: config, adminPort: adminPort, log: "\(work)/hookproxy.log",
                environment: ["HOOKPROXY_BENCH_NOOP_ROUTE": "1"])
            do {
                let ready = try process.waitReady()
                return Server(
                    process: process, ingestPort: ingestPort, adminPort: adminPort, config: config, database: database, ready: ready)
            } catch let error as BenchError where attempt < Self.startTries && error.description.contains("Address already in use") {
                continue
            }
        }
        throw BenchError("hookproxy could not be started")  // not reached: the last try returns or throws
    }

    /// How many times a server is started on new ports when the ones picked were taken meanwhile.
    private static let startTries = 3

    /// `sizes.instances` servers on one new database, started one after another.
    private func startInstances(_ name: String, isolation: String = "process") async throws -> [Server] {
        var servers = [try await start(name, isolation: isolation)]
        while servers.count < sizes.instances {
            servers.append(try await start(name, database: servers[0].database, isolation: isolation))
        }
        return servers
    }

    /// "isolated" or "in process", for row titles.
    private func describe(_ isolation: String) -> String { isolation == "process" ? "plugins isolated" : "plugins in process" }

    /// The highest peak RSS of `servers`.
    private func peakMemory(_ servers: [Server]) -> Int { servers.map { $0.process.memory().peak }.max() ?? 0 }

    /// ", N instances" for the row titles when there are several.
    private var acrossInstances: String { sizes.instances > 1 ? ", \(sizes.instances) instances" : "" }

    private func writeConfig(
        _ path: String, ingestPort: Int, adminPort: Int, database: String, paused: Bool, isolation: String = "process"
    ) throws {
        let text = Workload.config(
            ingestPort: ingestPort, adminPort: adminPort, sinkPort: sink.port, storageURL: database, pluginsDirectory: plugins,
            paused: paused, maxConcurrency: sizes.maxConcurrency, isolation: isolation)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    private func load(_ servers: [Server], path: String = "/webhooks/\(Workload.source)", shape: LoadShape, connections: Int? = nil)
        async throws -> LoadResult
    {
        try await LoadGenerator.run(
            ports: servers.map(\.ingestPort), connections: connections ?? sizes.connections, shape: shape, group: group,
            request: Workload.fixedBody(path: path))
    }

    // MARK: - Scenarios

    private func startup() async throws -> [Row] {
        let database = try await databases.make("startup")
        var times: [Double] = []
        var idle = 0
        var workers = (count: 0, proportional: 0)
        for index in 0..<sizes.startups {
            let server = try await start("startup", database: database)
            times.append(server.ready)
            if index == sizes.startups - 1 {
                try await Task.sleep(for: .seconds(3))
                idle = server.process.memory().resident
                workers = server.process.workerMemory()
            }
            server.stop()
        }
        let first = times.removeFirst()
        let slowest = times.max() ?? first
        let median = times.sorted()[times.count / 2]
        return [
            Row(
                "startup to ready, 4 plugins loaded, 3 formatters configured",
                "median \(ms(median)), slowest \(ms(slowest)); first start, creating the database: \(ms(first))",
                target: "≤ 300 ms", met: max(first, slowest) <= 0.3),
            Row(
                "idle RSS (ready, no traffic, 3 s after start)",
                "\(mb(idle)); its \(workers.count) plugin workers \(mb(workers.proportional)) more (proportional set size)",
                target: "≤ 40 MB", met: idle <= 40 << 20),
        ]
    }

    private func ingest() async throws -> [Row] {
        let servers = try await startInstances("ingest")
        ingestServers = servers
        // One pause holds every instance: it is recorded in the database.
        try servers[0].admin("POST", "/admin/destinations/chat/pause")
        _ = try await load(servers, shape: .closedLoop(count: nil, seconds: sizes.seconds / 5))
        let meter = try CPUMeter(
            servers.map(\.process), instructions: sizes.instructions, profile: sizes.profile ? "ingest" : nil,
            database: databases.isPostgres, work: work)
        let result = try await load(servers, shape: .closedLoop(count: nil, seconds: sizes.seconds))
        let cpu = meter.microseconds(per: result.answered)
        measured.ingestCPU = cpu.server + cpu.workers
        measured.ingestDatabaseCPU = meter.databaseMicroseconds(per: result.answered)
        let perRequest = meter.perUnit(result.answered)
        measured.ingestThroughput = result.throughput
        return [
            Row(
                "ingest: \(sizes.connections) connections, delivery paused, \(seconds(sizes.seconds)) s\(acrossInstances)",
                "\(rate(result.throughput)) req/s; \(latencies(result.latency)); \(result.errorSummary); server CPU \(perRequest)/req; peak RSS \(mb(peakMemory(servers)))",
                target: "≥ 10,000 req/s, p99 ≤ 25 ms",
                met: result.throughput >= 10_000 && millis(result.latency.valueAtPercentile(99)) <= 25 && result.errors == 0)
        ]
    }

    private func ceiling() async throws -> [Row] {
        let servers = ingestServers.isEmpty ? [try await start("ceiling")] : ingestServers
        defer {
            for server in servers { server.stop() }
            ingestServers = []
        }
        _ = try await load(servers, path: "/_bench/noop", shape: .closedLoop(count: nil, seconds: sizes.seconds / 5))
        let meter = try CPUMeter(
            servers.map(\.process), instructions: sizes.instructions, profile: sizes.profile ? "ceiling" : nil,
            database: databases.isPostgres, work: work)
        let result = try await load(servers, path: "/_bench/noop", shape: .closedLoop(count: nil, seconds: sizes.seconds))
        let perRequest = meter.perUnit(result.answered)
        measured.ceilingThroughput = result.throughput
        let ratio = measured.ingestThroughput.map { String(format: "; ingest is %.0f%% of it", 100 * $0 / result.throughput) } ?? ""
        return [
            Row(
                "ceiling: no-op route, same server and load\(acrossInstances)",
                "\(rate(result.throughput)) req/s; \(latencies(result.latency)); \(result.errorSummary); server CPU \(perRequest)/req\(ratio)"
            )
        ]
    }

    private func pipeline(isolation: String) async throws -> [Row] {
        let run = try await constantRate(sizes.rate, seconds: sizes.pipelineSeconds, isolation: isolation)
        let p50 = millis(run.endToEnd.valueAtPercentile(50))
        let p99 = millis(run.endToEnd.valueAtPercentile(99))
        return [
            Row(
                "pipeline, \(describe(isolation)): ingest answers at \(rate(sizes.rate))/s constant for \(seconds(sizes.pipelineSeconds)) s\(acrossInstances)",
                "\(latencies(run.ingest.latency)); \(run.ingest.errorSummary)"),
            Row(
                "pipeline, \(describe(isolation)): end to end (intended send -> sink received), one Discord destination",
                "\(latencies(run.endToEnd)); \(run.count) sent, \(run.missing) missing, \(run.duplicates) duplicates, \(run.ingest.errorSummary) at ingest",
                target: "p50 ≤ 10 ms, p99 ≤ 50 ms, zero errors", met: p50 <= 10 && p99 <= 50 && run.errors == 0),
        ] + (sizes.timeline ? [Row("pipeline, \(describe(isolation)): worst end to end per 100 ms, ms", run.timeline)] : [])
    }

    /// One constant-rate run on fresh servers: what ingest answered, and each event's time from its intended send to the
    /// sink.
    private func constantRate(_ perSecond: Double, seconds: Double, isolation: String) async throws -> (
        ingest: LoadResult, endToEnd: Histogram<UInt64>, count: Int, missing: Int, duplicates: Int, errors: Int, timeline: String
    ) {
        let servers = try await startInstances("pipeline", isolation: isolation)
        defer { for server in servers { server.stop() } }
        let count = max(1, Int(perSecond * seconds))
        try await sink.reset(expecting: count)
        let result = try await LoadGenerator.run(
            ports: servers.map(\.ingestPort), connections: sizes.connections,
            shape: .constantRate(rate: perSecond, seconds: seconds),
            group: group, request: Workload.numberedBodies(path: "/webhooks/\(Workload.source)"))
        let deadline = Date().addingTimeInterval(30)
        while try await sink.counts().received < count, Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        let counts = try await sink.counts()
        let arrivals = try await sink.arrivalTimes()
        var endToEnd = LoadResult().latency
        var missing = 0
        let interval = 1e9 / perSecond
        // The worst latency (µs) in each 100 ms of intended send time.
        var worst: [UInt64] = []
        for (number, arrival) in arrivals.enumerated() {
            guard arrival != 0 else {
                missing += 1
                continue
            }
            let intended = result.started + UInt64(Double(number) * interval)
            let latency = arrival > intended ? (arrival - intended) / 1000 : 0
            endToEnd.record(latency)
            let window = Int(Double(number) * interval / 1e8)
            if window >= worst.count { worst += Array(repeating: 0, count: window - worst.count + 1) }
            worst[window] = max(worst[window], latency)
        }
        let errors = result.errors + missing + counts.duplicates + counts.unnumbered
        let timeline = worst.map { String($0 / 1000) }.joined(separator: " ")
        return (result, endToEnd, count, missing, counts.duplicates, errors, timeline)
    }

    /// The highest constant rate whose end-to-end p99 stays within 50 ms with no errors, plugins isolated: a bisection
    /// between nothing and the ingest throughput (measured in this run, or 4,000/s), to within 5% of it (25% with
    /// `--quick`), each step a
    /// fresh server and `--find-rate-seconds` of load.
    private func findRate() async throws -> [Row] {
        let top = measured.ingestThroughput ?? 4000
        var (low, high) = (0.0, top)
        var best: (rate: Double, p99: Double)?
        var tried: [String] = []
        while high - low > top * sizes.findRatePrecision {
            let candidate = ((low + high) / 2).rounded()
            let run = try await constantRate(candidate, seconds: sizes.findRateSeconds, isolation: "process")
            let p99 = millis(run.endToEnd.valueAtPercentile(99))
            let held = p99 <= 50 && run.errors == 0
            tried.append("\(rate(candidate))/s: p99 \(String(format: "%.1f", p99)) ms\(run.errors > 0 ? ", \(run.errors) errors" : "")")
            FileHandle.standardError.write(Data("  find-rate: \(tried.last ?? "")\n".utf8))
            if held {
                low = candidate
                best = (candidate, p99)
            } else {
                high = candidate
            }
        }
        measured.sustainedRate = best?.rate ?? 0
        return [
            Row(
                "find-rate: highest constant rate with end-to-end p99 ≤ 50 ms, plugins isolated\(acrossInstances)",
                (best.map { "\(rate($0.rate))/s (p99 \(String(format: "%.1f", $0.p99)) ms)" } ?? "none of the rates tried")
                    + "; tried \(tried.joined(separator: "; "))")
        ]
    }

    /// The ratios issue 17 sets targets for, from this run's numbers (a row only where both of its numbers were measured).
    func ratioRows() -> [Row] {
        var rows: [Row] = []
        let m = measured
        func ratio(_ title: String, _ value: Double?, target: String, met: (Double) -> Bool, _ detail: String = "") {
            guard let value, value.isFinite else { return }
            rows.append(Row(title, String(format: "%.2f", value) + detail, target: target, met: met(value)))
        }
        if let ingest = m.ingestThroughput, let ceiling = m.ceilingThroughput {
            ratio("ratio: ingest throughput / no-op ceiling", ingest / ceiling, target: "≥ 0.5", met: { $0 >= 0.5 })
        }
        if let delivery = m.drainCPU, let ingest = m.ingestCPU {
            ratio(
                "ratio: CPU per delivery / CPU per ingested request (server and plugin workers)", delivery / ingest, target: "≤ 1.0",
                met: { $0 <= 1.0 }, String(format: " (%.0f µs / %.0f µs)", delivery, ingest))
            if databases.isPostgres, let deliveryDB = m.drainDatabaseCPU, let ingestDB = m.ingestDatabaseCPU {
                ratio(
                    "ratio, PostgreSQL: server + database CPU per delivery / per ingested request",
                    (delivery + deliveryDB) / (ingest + ingestDB), target: "≤ 1.5", met: { $0 <= 1.5 },
                    String(format: " (%.0f µs / %.0f µs)", delivery + deliveryDB, ingest + ingestDB))
            }
        }
        if let drain = m.drainThroughput, let ingest = m.ingestThroughput {
            ratio("ratio: drain throughput / ingest throughput", drain / ingest, target: "≥ 0.8", met: { $0 >= 0.8 })
        }
        if let sustained = m.sustainedRate, let ingest = m.ingestThroughput {
            ratio(
                "ratio: highest rate with end-to-end p99 ≤ 50 ms / ingest throughput", sustained / ingest, target: "≥ 0.5",
                met: { $0 >= 0.5 })
        }
        return rows
    }

    /// Drain with the formatter isolated (the default) and in process, one after the other, and the ratio of the two.
    private func drains() async throws -> [Row] {
        let isolated = try await drain(isolation: "process")
        measured.drainThroughput = isolated.perSecond
        measured.drainCPU = isolated.cpu.server + isolated.cpu.workers
        measured.drainDatabaseCPU = isolated.database
        let inProcess = try await drain(isolation: "in_process")
        let ratio = isolated.perSecond / max(1, inProcess.perSecond)
        let extra = (isolated.cpu.server + isolated.cpu.workers) - (inProcess.cpu.server + inProcess.cpu.workers)
        return isolated.rows + inProcess.rows + [
            Row(
                "drain: isolated against in process",
                String(
                    format:
                        "%.0f%% of the in-process throughput; isolation costs %.0f µs of CPU per delivery (the worker %.0f µs, the host %+.0f µs)",
                    100 * ratio, extra, isolated.cpu.workers, isolated.cpu.server - inProcess.cpu.server),
                target: "≥ 80%", met: ratio >= 0.8)
        ]
    }

    private func drain(isolation: String) async throws -> (
        rows: [Row], perSecond: Double, cpu: (server: Double, workers: Double), database: Double
    ) {
        let servers = try await startInstances("drain", isolation: isolation)
        defer { for server in servers { server.stop() } }
        try servers[0].admin("POST", "/admin/destinations/chat/pause")
        let filled = try await load(servers, shape: .closedLoop(count: sizes.drainCount, seconds: nil))
        guard filled.accepted == sizes.drainCount else {
            throw BenchError("drain: only \(filled.accepted) of \(sizes.drainCount) accepted")
        }
        try await sink.reset(expecting: 0)
        let started = Date()
        let meter = try CPUMeter(
            servers.map(\.process), instructions: sizes.instructions, profile: sizes.profile ? "drain-\(isolation)" : nil,
            database: databases.isPostgres, work: work)
        try servers[0].admin("POST", "/admin/destinations/chat/resume")
        let deadline = started.addingTimeInterval(600)
        while try await sink.counts().received < sizes.drainCount, Date() < deadline { try await Task.sleep(for: .milliseconds(5)) }
        let seconds = Date().timeIntervalSince(started)
        let received = try await sink.counts().received
        let perSecond = Double(received) / seconds
        let cpu = meter.microseconds(per: received)
        let database = meter.databaseMicroseconds(per: received)
        let perDelivery = meter.perUnit(received)
        let workers = servers.flatMap { $0.process.workers() }.count
        return (
            [
                Row(
                    "drain, \(describe(isolation)): \(count(sizes.drainCount)) queued deliveries, then the destination resumes\(acrossInstances)",
                    "\(rate(perSecond)) deliveries/s (\(count(received)) in \(String(format: "%.1f", seconds)) s); server CPU \(perDelivery)/delivery; peak RSS \(mb(peakMemory(servers)))\(workers > 0 ? ", \(workers) plugin workers" : "")",
                    target: "≥ 5,000 deliveries/s", met: perSecond >= 5000 && received >= sizes.drainCount)
            ], perSecond, cpu, database
        )
    }

    private func backlog() async throws -> [Row] {
        let first = try await start("backlog", paused: true)
        let filled = try await load([first], shape: .closedLoop(count: sizes.backlogCount, seconds: nil))
        let afterIngest = first.process.memory()
        first.stop()
        guard filled.accepted == sizes.backlogCount else {
            throw BenchError("backlog: only \(filled.accepted) of \(sizes.backlogCount) accepted")
        }
        // The same database, a new process: what does holding the backlog cost?
        let second = try await start("backlog", paused: true, database: first.database)
        defer { second.stop() }
        try await Task.sleep(for: .seconds(3))
        let idle = second.process.memory().resident
        // Resume by reload and watch memory while the backlog drains.
        try await sink.reset(expecting: 0)
        try writeConfig(second.config, ingestPort: second.ingestPort, adminPort: second.adminPort, database: second.database, paused: false)
        try second.admin("POST", "/admin/reload")
        var draining = 0
        for _ in 0..<20 {
            try await Task.sleep(for: .milliseconds(500))
            draining = max(draining, second.process.memory().resident)
        }
        let drained = try await sink.counts().received
        let file = first.database.hasPrefix("sqlite:") ? String(first.database.dropFirst("sqlite:".count)) : nil
        let size = file.map { (try? FileManager.default.attributesOfItem(atPath: $0)[.size] as? Int) ?? 0 }
        let worst = max(afterIngest.peak, draining)
        return [
            Row(
                "backlog: fill \(count(sizes.backlogCount)) events, delivery paused",
                "\(rate(filled.throughput)) req/s into a growing database\(size.map { " (\(mb($0)) file)" } ?? ""); \(latencies(filled.latency))"
            ),
            Row(
                "backlog: RSS holding \(count(sizes.backlogCount)) queued events",
                "after filling \(mb(afterIngest.resident)) (peak \(mb(afterIngest.peak))); restarted on it: ready in \(ms(second.ready)), idle \(mb(idle)); draining for 10 s (\(count(drained)) sent): up to \(mb(draining))",
                target: "≤ 150 MB", met: worst <= 150 << 20),
        ]
    }
}

// MARK: - Formatting

func ms(_ seconds: Double) -> String { String(format: "%.0f ms", seconds * 1000) }
/// Microseconds to milliseconds.
func millis(_ microseconds: UInt64) -> Double { Double(microseconds) / 1000 }
/// 10 for 10.0, 0.5 for 0.5.
func seconds(_ value: Double) -> String { String(format: "%g", value) }
func mb(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1_048_576) }
func rate(_ value: Double) -> String { count(Int(value.rounded())) }
func count(_ value: Int) -> String {
    let digits = String(value)
    var out = ""
    for (index, character) in digits.enumerated() {
        if index > 0, (digits.count - index) % 3 == 0 { out += "," }
        out.append(character)
    }
    return out
}
func latencies(_ histogram: Histogram<UInt64>) -> String {
    func format(_ percentile: Double) -> String { String(format: "%.2f", millis(histogram.valueAtPercentile(percentile))) }
    return "p50 \(format(50)) ms, p99 \(format(99)) ms, p99.9 \(format(99.9)) ms, max \(String(format: "%.2f", millis(histogram.max))) ms"
}
