import Foundation

/// What every run prints first: the machine, the build and the configuration, so numbers are never read without them.
enum Machine {
    /// `database`: the PostgreSQL server's description, or nil for SQLite.
    static func describe(binaries: String, work: String, sizes: Sizes, database: String?, quick: Bool) -> String {
        let cpu =
            (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?.split(separator: "\n")
            .first { $0.hasPrefix("model name") }?.split(separator: ":", maxSplits: 1).last?.trimmingCharacters(in: .whitespaces)
            ?? "unknown"
        let memory = ProcessInfo.processInfo.physicalMemory
        var system = utsname()
        uname(&system)
        let kernel = withUnsafeBytes(of: &system.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        var lines = [
            "# hookproxy-bench \(ISO8601DateFormatter().string(from: Date()))\(quick ? " (--quick: a smoke run, the numbers mean nothing)" : "")",
            "machine: \(ProcessInfo.processInfo.activeProcessorCount) cores (\(cpu)), \(memory >> 30) GiB RAM, Linux \(kernel); "
                + "load generator, sink and server share them",
            "disk: \(filesystem(of: work)) (\(database == nil ? "databases in \(work)" : "work files in \(work)"))",
            "build: release, \(version(binaries))",
            database.map { database in
                "server: \(sizes.instances) instance\(sizes.instances == 1 ? "" : "s") on \(database) (same machine, its defaults: fsync and "
                    + "synchronous_commit on), group commit; every 202 is committed; log level warning"
            } ?? "server: SQLite WAL, synchronous=FULL, group commit; every 202 is on disk; log level warning",
            "workload: \(Workload.bodySize) B JSON push, GitHub HMAC-SHA256 signature checked, 4 mapped fields, idempotency key, "
                + "1 Discord destination (sink on loopback answering 204)",
            "sizes: \(sizes.connections) connections × \(seconds(sizes.seconds)) s (max throughput), \(Int(sizes.rate))/s × "
                + "\(seconds(sizes.pipelineSeconds)) s (pipeline), \(sizes.drainCount) (drain), \(sizes.backlogCount) (backlog)",
        ]
        if quick { lines.append("") }
        return lines.joined(separator: "\n")
    }

    /// `hookproxy --version`.
    private static func version(_ binaries: String) -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binaries + "/hookproxy")
        process.arguments = ["--version"]
        let pipe = Pipe()
        process.standardOutput = pipe
        guard (try? process.run()) != nil else { return "hookproxy (version unknown)" }
        process.waitUntilExit()
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return "hookproxy " + text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The mount holding `path`: device and file system type.
    private static func filesystem(of path: String) -> String {
        guard let mounts = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) else { return "unknown" }
        let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        var best: (point: String, text: String) = ("", "unknown")
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3 else { continue }
            let point = String(fields[1])
            if resolved.hasPrefix(point), point.count > best.point.count { best = (point, "\(fields[2]) on \(fields[0])") }
        }
        return best.text
    }
}
