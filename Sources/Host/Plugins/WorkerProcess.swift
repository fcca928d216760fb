import Foundation
import HostShims
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// One plugin worker process, seen from the host: the `hookproxy` executable in its `plugin-worker` mode, started with
/// a socket to talk over and a pipe its crash handler reports on.
///
/// Every method blocks: this type is only used on the threads of ``WorkerPool`` and ``PluginProbe`` (never on Swift's
/// cooperative pool). Each wait has a deadline; a worker that misses one is killed by the caller.
///
/// `@unchecked Sendable`: one thread uses an instance at a time (its driver); the descriptors are plain integers.
final class WorkerProcess: @unchecked Sendable {
    let pid: pid_t
    private let channel: Int32
    private let crashPipe: Int32
    /// Bytes read and not yet taken as frames, from `offset`.
    private var buffer: [UInt8] = []
    private var offset = 0
    private var reaped: WorkerExit?

    /// How a worker failed to answer.
    enum Failure: Error {
        /// The deadline passed.
        case timedOut
        /// It closed its socket (it died, or closed it).
        case closed
        /// It sent something that does not follow the protocol.
        case malformed(String)
    }

    private init(pid: pid_t, channel: Int32, crashPipe: Int32) {
        self.pid = pid
        self.channel = channel
        self.crashPipe = crashPipe
    }

    deinit {
        if reaped == nil {
            _ = Glibc.kill(pid, SIGKILL)
            _ = waitFor(blocking: true)
        }
        Glibc.close(channel)
        Glibc.close(crashPipe)
    }

    // MARK: Starting

    /// The executable workers run: this one when it is `hookproxy`, else the `hookproxy` beside it (the test runner),
    /// or `$HOOKPROXY_WORKER_EXECUTABLE`.
    static let executable: String? = {
        if let path = ProcessInfo.processInfo.environment["HOOKPROXY_WORKER_EXECUTABLE"], !path.isEmpty { return path }
        let own = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        if URL(fileURLWithPath: own).lastPathComponent == "hookproxy" { return own }
        let sibling = URL(fileURLWithPath: own).deletingLastPathComponent().appendingPathComponent("hookproxy").path
        return FileManager.default.isExecutableFile(atPath: sibling) ? sibling : nil
    }()

    /// The environment variables a worker inherits from the server (and `LC_*`).
    static let inheritedVariables: Set<String> = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "LD_LIBRARY_PATH"]

    /// Starts a worker: `hookproxy plugin-worker --parent PID --memory-limit BYTES` and `arguments`.
    static func start(arguments: [String], memoryLimit: Int) throws(PluginInstanceError) -> WorkerProcess {
        guard let executable else {
            throw PluginInstanceError(
                message: "cannot start plugin workers: no hookproxy executable beside \(CommandLine.arguments[0]) "
                    + "(set HOOKPROXY_WORKER_EXECUTABLE, or isolation: in_process)")
        }
        var sockets: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &sockets) == 0 else {
            throw PluginInstanceError(message: "cannot start a plugin worker: socketpair: \(String(cString: strerror(errno)))")
        }
        var pipe: [Int32] = [-1, -1]
        guard Glibc.pipe(&pipe) == 0 else {
            Glibc.close(sockets[0])
            Glibc.close(sockets[1])
            throw PluginInstanceError(message: "cannot start a plugin worker: pipe: \(String(cString: strerror(errno)))")
        }
        _ = fcntl(pipe[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(pipe[1], F_SETFD, FD_CLOEXEC)
        let argv =
            [executable, "plugin-worker", "--parent", String(getpid()), "--memory-limit", String(memoryLimit)] + arguments
        // A minimal environment: the server's holds secrets (`${VAR}` references), which a plugin is never given.
        var environment = ProcessInfo.processInfo.environment.filter { Self.inheritedVariables.contains($0.key) || $0.key.hasPrefix("LC_") }
        // The worker reports its own crashes (to the crash pipe); Swift's backtracer would only slow that down.
        environment["SWIFT_BACKTRACE"] = "enable=no"
        var pid: pid_t = 0
        let result = withCStrings(argv) { argvPointers in
            withCStrings(environment.map { "\($0.key)=\($0.value)" }) { envPointers in
                hp_spawn(executable, argvPointers, envPointers, sockets[1], pipe[1], &pid)
            }
        }
        Glibc.close(sockets[1])
        Glibc.close(pipe[1])
        guard result == 0 else {
            Glibc.close(sockets[0])
            Glibc.close(pipe[0])
            throw PluginInstanceError(message: "cannot start a plugin worker (\(executable)): \(String(cString: strerror(result)))")
        }
        _ = fcntl(sockets[0], F_SETFL, fcntl(sockets[0], F_GETFL) | O_NONBLOCK)
        _ = fcntl(pipe[0], F_SETFL, fcntl(pipe[0], F_GETFL) | O_NONBLOCK)
        return WorkerProcess(pid: pid, channel: sockets[0], crashPipe: pipe[0])
    }

    private static func withCStrings<T>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> T) -> T {
        var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
        pointers.append(nil)
        defer { for pointer in pointers { free(pointer) } }
        return pointers.withUnsafeBufferPointer { buffer in
            // `posix_spawn` takes `char *const argv[]`; the buffer outlives the call.
            body(buffer.baseAddress.unsafelyUnwrapped)
        }
    }

    // MARK: Talking

    /// Writes `bytes` before `deadline`, reading whatever the worker sends meanwhile (so that neither side can block
    /// the other on a full socket).
    func send(_ bytes: [UInt8], deadline: ContinuousClock.Instant) throws(Failure) {
        var sent = 0
        while sent < bytes.count {
            var descriptor = pollfd(fd: channel, events: Int16(POLLOUT | POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Self.milliseconds(until: deadline))
            if ready == 0 { throw .timedOut }
            if ready < 0 {
                if errno == EINTR { continue }
                throw .closed
            }
            if descriptor.revents & Int16(POLLIN) != 0 { try fill() }
            if descriptor.revents & Int16(POLLOUT) != 0 {
                let count = bytes.withUnsafeBytes { raw in
                    Glibc.send(channel, raw.baseAddress.map { $0 + sent }, raw.count - sent, Int32(MSG_NOSIGNAL))
                }
                if count > 0 {
                    sent += count
                } else if count < 0, errno != EAGAIN, errno != EINTR {
                    throw .closed
                }
            } else if descriptor.revents & Int16(POLLHUP | POLLERR) != 0 {
                throw .closed
            }
        }
    }

    /// The next message before `deadline`; `log` messages are handed to `onLog` and not returned.
    func receive(deadline: ContinuousClock.Instant, onLog: (UInt8, String) -> Void) throws(Failure) -> WorkerMessage {
        while true {
            do {
                if let (message, next) = try WorkerMessage.next(in: buffer, from: offset, maximum: WorkerMessage.maximumFromWorker) {
                    offset = next
                    if offset > 1 << 16, offset * 2 > buffer.count {
                        buffer.removeFirst(offset)
                        offset = 0
                    }
                    if case .log(let level, let text) = message {
                        onLog(level, text)
                        continue
                    }
                    return message
                }
            } catch {
                throw .malformed(error.description)
            }
            var descriptor = pollfd(fd: channel, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Self.milliseconds(until: deadline))
            if ready == 0 { throw .timedOut }
            if ready < 0 {
                if errno == EINTR { continue }
                throw .closed
            }
            try fill()
        }
    }

    /// Reads what is available into the buffer.
    private func fill() throws(Failure) {
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        let count = chunk.withUnsafeMutableBytes { Glibc.recv(channel, $0.baseAddress, $0.count, 0) }
        if count > 0 {
            if offset == buffer.count {
                buffer.removeAll(keepingCapacity: true)
                offset = 0
            }
            buffer += chunk[0..<count]
        } else if count == 0 {
            throw .closed
        } else if errno != EAGAIN, errno != EINTR {
            throw .closed
        }
    }

    private static func milliseconds(until deadline: ContinuousClock.Instant) -> Int32 {
        let left = deadline - .now
        guard left > .zero else { return 0 }
        return Int32(clamping: max(1, left.wholeMilliseconds))
    }

    // MARK: Ending

    /// Ends the worker (SIGKILL) and waits for it.
    @discardableResult
    func kill() -> WorkerExit {
        if let reaped { return reaped }
        _ = Glibc.kill(pid, SIGKILL)
        return waitFor(blocking: true)
    }

    /// After the socket closed: waits a little for the worker to be gone (it is exiting), then kills it.
    func reap() -> WorkerExit {
        if let reaped { return reaped }
        for _ in 0..<50 {
            let exit = waitFor(blocking: false)
            if exit != .running { return exit }
            usleep(2000)
        }
        return kill()
    }

    /// Closes the socket: the worker reads the end of it and exits; it is killed if it has not within `grace`.
    func stop(grace: Duration) {
        shutdown(channel, Int32(SHUT_RDWR))
        let deadline = ContinuousClock.now + grace
        while ContinuousClock.now < deadline {
            if waitFor(blocking: false) != .running { return }
            usleep(5000)
        }
        kill()
    }

    private func waitFor(blocking: Bool) -> WorkerExit {
        if let reaped { return reaped }
        var status: Int32 = 0
        let result = waitpid(pid, &status, blocking ? 0 : WNOHANG)
        if result == 0 { return .running }
        let exit: WorkerExit
        if result < 0 {
            exit = .unknown
        } else if status & 0x7F == 0 {
            exit = .exited(status: (status >> 8) & 0xFF)
        } else {
            exit = .signaled(signal: status & 0x7F, report: readCrashReport())
        }
        reaped = exit
        return exit
    }

    private func readCrashReport() -> CrashReport? {
        var report = hp_crash_report()
        let size = MemoryLayout<hp_crash_report>.size
        let count = withUnsafeMutableBytes(of: &report) { Glibc.read(crashPipe, $0.baseAddress, size) }
        guard count == size, report.magic == HP_CRASH_REPORT_MAGIC else { return nil }
        return CrashReport(dataBytes: report.data_bytes, stackOverflow: report.stack_overflow != 0)
    }
}

/// What a worker's crash handler reported.
struct CrashReport: Sendable, Equatable {
    var dataBytes: UInt64
    var stackOverflow: Bool
}

/// How a worker process ended.
enum WorkerExit: Sendable, Equatable {
    case running
    case exited(status: Int32)
    case signaled(signal: Int32, report: CrashReport?)
    case unknown

    /// `crashed (SIGSEGV)`, `crashed (SIGSEGV: stack overflow)`, `ran out of memory (memory_limit 256 MiB, SIGABRT)`,
    /// `exited (status 0)`.
    func describe(memoryLimit: Int) -> String {
        switch self {
        case .running: return "stopped answering"
        case .unknown: return "died"
        case .exited(let status): return "exited (status \(status))"
        case .signaled(let signal, let report):
            let name = Self.signalName(signal)
            if let report, memoryLimit > 0, report.dataBytes >= UInt64(memoryLimit) / 10 * 9 {
                return "ran out of memory (memory_limit \(Self.mebibytes(memoryLimit)), \(name))"
            }
            if report?.stackOverflow == true { return "crashed (\(name): stack overflow)" }
            return signal == SIGKILL ? "was killed (SIGKILL)" : "crashed (\(name))"
        }
    }

    static func mebibytes(_ bytes: Int) -> String { "\(bytes >> 20) MiB" }

    static func signalName(_ signal: Int32) -> String {
        switch signal {
        case SIGSEGV: "SIGSEGV"
        case SIGBUS: "SIGBUS"
        case SIGILL: "SIGILL"
        case SIGFPE: "SIGFPE"
        case SIGABRT: "SIGABRT"
        case SIGTRAP: "SIGTRAP"
        case SIGKILL: "SIGKILL"
        case SIGTERM: "SIGTERM"
        case SIGPIPE: "SIGPIPE"
        case SIGXCPU: "SIGXCPU"
        default: "signal \(signal)"
        }
    }
}
