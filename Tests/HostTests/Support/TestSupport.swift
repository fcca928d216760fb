import AsyncHTTPClient
import Crypto
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import PluginKit
import Synchronization

@testable import Host

/// Paths the tests need: the package root (for the ABI header and fixtures) and fresh temporary directories.
enum TestPaths {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    static var abiInclude: String { packageRoot + "/Sources/PluginABI/include" }
    static var fixtures: String { packageRoot + "/Tests/HostTests/Fixtures" }

    /// A new, empty directory under the system temporary directory.
    static func temporaryDirectory(_ label: String = "test") -> String {
        let path = NSTemporaryDirectory() + "hookproxy-\(label)-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}

/// The plugins discovered beside the executable (the shipped ones), probed once for the whole suite.
func shippedPlugins() async -> PluginLoader.Catalog {
    await discoverPlugins(TestPaths.temporaryDirectory("no-plugins"))
}

/// The plugins in `directory` and beside the executable.
func discoverPlugins(_ directory: String) async -> PluginLoader.Catalog {
    await PluginLoader.discover(directory: directory, logger: testLogger)
}

/// An instance of `plugin` on an executor of its own: in worker processes unless `isolation` says otherwise, as the
/// server runs it.
func pluginInstance(
    _ plugin: LoadedPlugin, options: JSONValue = [:], isolation: PluginIsolation = .process
) async throws(PluginInstanceError) -> PluginInstance {
    var settings = PluginSettings()
    settings.isolation = isolation
    // The formatter tests feed debug builds of the plugins very long inputs on a loaded machine: they test output, not
    // deadlines.
    settings.callTimeout = .seconds(60)
    let executor = try await PluginHost.makeExecutor(plugin: plugin, settings: settings, logger: testLogger)
    return try await PluginInstance.make(options: options, executor: executor)
}

/// A logger for tests: warnings and worse to standard error.
let testLogger: Logger = {
    var logger = Logger(label: "hookproxy-test") { StreamLogHandler.standardError(label: $0) }
    logger.logLevel = ProcessInfo.processInfo.environment["HOOKPROXY_TEST_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .warning
    return logger
}()

struct TimedOut: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Waits until `condition` holds, checking every 20 ms, and fails after `timeout`.
func waitUntil(_ what: String, timeout: Duration = .seconds(20), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    if try await condition() { return }
    throw TimedOut(what: what)
}

/// Runs `body`, which blocks, on a thread of its own: never on the Swift concurrency pool, and never on Dispatch's
/// global queue. Both have one thread per core (two on CI): a blocking wait on either stalls every other test running
/// in parallel (a bench smoke run waited on there for 35 s, and the raw clients' reads queued behind it timed out).
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// Runs a shell command and returns its exit status and combined output.
@discardableResult
func shell(_ command: String) async throws -> (status: Int32, output: String) {
    try await onOwnThread { try runBlocking(command) }
}

private func runBlocking(_ command: String) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", command]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    // Not readDataToEndOfFile(): it ends the whole test process with a try! when a signal interrupts the read.
    let data = try ReadToEnd.bytes(of: pipe.fileHandleForReading.fileDescriptor)
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// The ports `unusedPort()` has handed out in this test process. A port is free when it is chosen but bound only
/// later, by a server that starts after; without this, two tests running at once could both be given it (a birthday
/// collision among the suite's few dozen picks, seen in CI as a child server's "Address already in use").
private let handedOutPorts = Mutex<Set<Int>>([])

/// A free TCP port on loopback, for a listener that must keep its port across restarts. It is chosen below the
/// kernel's ephemeral range (32768 and up), so no port-0 bind elsewhere in the suite and no outgoing connection can
/// take it in the meantime, and never twice in one test process. The probe's socket is open for a moment: a process
/// spawned then without closing inherited descriptors keeps it (a PostgreSQL server did, `PrivateCluster`), so every
/// spawn in the tests closes what it does not pass on.
func unusedPort() throws -> Int {
    for _ in 0..<100 {
        let port = Int.random(in: 20_000..<30_000)
        guard handedOutPorts.withLock({ $0.insert(port).inserted }) else { continue }
        guard let channel = try? ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: port).wait()
        else { continue }
        try channel.close().wait()
        return port
    }
    throw TimedOut(what: "a free port between 20000 and 30000")
}

/// An HTTP answer as the tests look at it.
struct TestResponse {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]

    var json: JSONValue? { try? JSONValue(parsing: body) }

    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
}

/// The tests' HTTP client: a refused connection fails at once instead of being retried until the timeout.
let testHTTPClient: HTTPClient = {
    var configuration = HTTPClient.Configuration()
    configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
    configuration.connectionPool.retryConnectionEstablishment = false
    // Waiting for one of those connections counts against the connect timeout: tests that send hundreds of requests at
    // once on a loaded two-core machine wait longer than the default 10 s.
    configuration.timeout.connect = .seconds(60)
    return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
}()

/// Sends one request on loopback.
func send(
    _ method: HTTPMethod = .POST, _ url: String, body: [UInt8] = [], headers: [(String, String)] = []
) async throws -> TestResponse {
    var request = HTTPClientRequest(url: url)
    request.method = method
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    if !body.isEmpty || method == .POST { request.body = .bytes(ByteBuffer(bytes: body)) }
    let response = try await testHTTPClient.execute(request, timeout: .seconds(30))
    let collected = try await response.body.collect(upTo: 16 << 20)
    return TestResponse(
        status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) }, body: Array(collected.readableBytesView))
}

/// GitHub's `X-Hub-Signature-256` value for `body` under `secret`.
func githubSignature(secret: String, body: [UInt8]) -> String {
    "sha256="
        + HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Array(secret.utf8))).map { String(format: "%02x", $0) }
        .joined()
}

/// A state-changing admin request as the CLI sends it (and the docs' curl lines): `Content-Type: application/json`.
func adminPost(_ url: String, body: [UInt8] = [], headers: [(String, String)] = []) async throws -> TestResponse {
    try await send(.POST, url, body: body, headers: [("Content-Type", "application/json")] + headers)
}
