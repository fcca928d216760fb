import Foundation

/// The server's CPU time over a stretch of a run and, with `--instructions`, the instructions its threads retired
/// (`perf stat`). On a shared machine the time per request varies by tens of percent from run to run; the instruction
/// count varies by a few, so it is what to compare when judging a change.
final class CPUMeter {
    private let server: ServerProcess
    private let startSeconds: Double
    private let perf: Process?
    private let perfInput = Pipe()
    private let output: String

    /// Starts measuring now. `instructions` attaches `perf stat` to the server (from Debian's linux-perf).
    init(_ server: ServerProcess, instructions: Bool, work: String) throws {
        self.server = server
        output = work + "/perf-\(server.pid)-\(UUID().uuidString.prefix(8)).csv"
        if instructions {
            let perf = Process()
            perf.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            // perf counts the server while `cat` runs; closing its input stops both. (A signal would not do: children of
            // Foundation's Process start with every signal blocked.)
            perf.arguments = [
                "perf", "stat", "-x", ",", "-e", "instructions,task-clock", "-o", output, "-p", String(server.pid), "--", "cat",
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
        startSeconds = server.cpuSeconds()
    }

    /// Stops measuring and describes the cost of each of `units` (answered requests or deliveries), for example
    /// "190 µs" or "190 µs, 1.52 M instructions".
    func perUnit(_ units: Int) -> String {
        let seconds = server.cpuSeconds() - startSeconds
        let divisor = Double(max(1, units))
        var text = String(format: "%.0f µs", seconds * 1e6 / divisor)
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
