import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A `hookproxy serve` child process.
final class ServerProcess {
    let process = Process()
    let adminPort: Int
    let launched: Date
    /// Where its output goes.
    let log: String

    /// Starts `hookproxy serve --config config`, its output appended to `log`.
    init(binary: String, config: String, adminPort: Int, log: String, environment: [String: String] = [:]) throws {
        self.adminPort = adminPort
        self.log = log
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--config", config, "--log-level", "warning"]
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil) }
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        output.seekToEndOfFile()
        process.standardOutput = output
        process.standardError = output
        launched = Date()
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }

    /// Waits until `GET /readyz` answers 200 and returns the seconds since launch.
    func waitReady(timeout: Double = 120) throws -> Double {
        while Date().timeIntervalSince(launched) < timeout {
            guard process.isRunning else {
                // Its last lines say why (the log is shared by every server of the run).
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                let tail = text.split(separator: "\n").suffix(5).joined(separator: "\n")
                throw BenchError("hookproxy exited during start-up (status \(process.terminationStatus)); its log ends:\n\(tail)")
            }
            if let answer = BlockingHTTP.request("GET", port: adminPort, path: "/readyz"), answer.status == 200 {
                return Date().timeIntervalSince(launched)
            }
            usleep(500)
        }
        throw BenchError("hookproxy was not ready after \(Int(timeout)) s")
    }

    /// Resident set size now and at its peak, in bytes (`VmRSS`, `VmHWM`).
    func memory() -> (resident: Int, peak: Int) {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return (0, 0) }
        func field(_ name: String) -> Int {
            for line in status.split(separator: "\n") where line.hasPrefix(name + ":") {
                let digits = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0"
                return (Int(digits) ?? 0) * 1024
            }
            return 0
        }
        return (field("VmRSS"), field("VmHWM"))
    }

    /// The server's live child processes: its plugin workers (`isolation: process`).
    func workers() -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry -> Int32? in
            guard let child = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8),
                let end = stat.lastIndex(of: ")")
            else { return nil }
            // After "pid (comm) ": state, then the parent's pid.
            let fields = stat[stat.index(after: end)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == pid ? child : nil
        }
    }

    /// The plugin workers' memory: how many, and their proportional set size in all (shared pages counted once
    /// across the processes sharing them, from `/proc/PID/smaps_rollup`), in bytes.
    func workerMemory() -> (count: Int, proportional: Int) {
        let workers = workers()
        let total = workers.map { worker -> Int in
            guard let text = try? String(contentsOfFile: "/proc/\(worker)/smaps_rollup", encoding: .utf8) else { return 0 }
            for line in text.split(separator: "\n") where line.hasPrefix("Pss:") {
                return (Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0) * 1024
            }
            return 0
        }.reduce(0, +)
        return (workers.count, total)
    }

    /// CPU time the server's plugin workers have used so far, by pid (live workers only).
    func workerCPUSeconds() -> [Int32: Double] {
        Dictionary(
            uniqueKeysWithValues: workers().compactMap { worker in
                (try? String(contentsOfFile: "/proc/\(worker)/stat", encoding: .utf8)).map { (worker, Self.cpuSeconds(stat: $0)) }
            })
    }

    /// Context switches of the server's threads and its plugin workers' so far (voluntary and involuntary, summed over
    /// `/proc/PID/task/*/status`; threads that ended meanwhile are not counted). A count, unlike CPU time steady from
    /// run to run on a shared machine: each is a thread that went to sleep or was preempted, so it counts the wake-ups
    /// that hand work between threads.
    func contextSwitches() -> Int {
        ([pid] + workers()).map(Self.contextSwitches(process:)).reduce(0, +)
    }

    static func contextSwitches(process: Int32) -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process)/task")) ?? []
        return tasks.map { task in
            guard let status = try? String(contentsOfFile: "/proc/\(process)/task/\(task)/status", encoding: .utf8) else { return 0 }
            return status.split(separator: "\n").reduce(0) { total, line in
                guard line.hasPrefix("voluntary_ctxt_switches:") || line.hasPrefix("nonvoluntary_ctxt_switches:") else { return total }
                return total + (Int(line.split(separator: "\t").last ?? "0") ?? 0)
            }
        }.reduce(0, +)
    }

    /// CPU time the process has used so far (user + system), in seconds.
    func cpuSeconds() -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return 0 }
        return Self.cpuSeconds(stat: stat)
    }

    /// User + system CPU seconds from the text of a `/proc/PID/stat`.
    static func cpuSeconds(stat: String) -> Double {
        guard let end = stat.lastIndex(of: ")") else { return 0 }
        // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
        let fields = stat[stat.index(after: end)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// SIGTERM, then waits for the graceful stop.
    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }
}

/// One blocking HTTP/1.1 request on loopback with `Connection: close`, for the admin API and readiness checks.
enum BlockingHTTP {
    struct Answer {
        var status: Int
        var body: String
    }

    static func request(_ method: String, port: Int, path: String, body: String = "", timeoutSeconds: Int = 30) -> Answer? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return nil }
        let message = Array(
            "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
                .utf8)
        guard message.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == message.count else { return nil }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            received.append(contentsOf: chunk[0..<count])
        }
        let text = String(decoding: received, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { return nil }
        let statusLine = text[..<split.lowerBound].split(separator: " ", maxSplits: 2)
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { return nil }
        return Answer(status: status, body: String(text[split.upperBound...]))
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A TCP port nobody listens on right now: one the kernel picks (bound to port 0, then closed). The server binds it a
/// moment later; another process may take it in between (decisions §39: a fixed range shared by the suite's two
/// concurrent benchmark runs collided more often, and was taken back).
func unusedPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}
