import Foundation
import Logging
import PluginKit

@testable import Host

/// A real hookproxy server running in this process, on loopback ports chosen by the system, with its SQLite file in
/// its own directory.
final class TestServer: Sendable {
    let directory: String
    let server: HookproxyServer
    let ingestPort: Int
    let adminPort: Int
    private let task: Task<Void, any Error>

    var ingestURL: String { "http://127.0.0.1:\(ingestPort)" }
    var adminURL: String { "http://127.0.0.1:\(adminPort)" }
    var store: any EventStore { server.store }

    private init(directory: String, server: HookproxyServer, ports: (ingest: Int, admin: Int), task: Task<Void, any Error>) {
        self.directory = directory
        self.server = server
        self.ingestPort = ports.ingest
        self.adminPort = ports.admin
        self.task = task
    }

    /// Writes `yaml` as `sources.yaml` in `directory` (a new one when nil) and starts a server on it.
    /// The YAML's `server` section should listen on port 0; `storage` defaults to `data/hookproxy.sqlite` there.
    /// `configure` changes the server's tuning (the engine's idle poll is 200 ms unless it says otherwise).
    static func start(
        yaml: String, directory: String? = nil, environment: [String: String] = [:],
        configure: (inout HookproxyServer.Configuration) -> Void = { _ in }
    ) async throws -> TestServer {
        let directory = directory ?? TestPaths.temporaryDirectory("server")
        let file = directory + "/sources.yaml"
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        let config = try ConfigLoader(environment: environment).load(file: file)
        var configuration = HookproxyServer.Configuration()
        configuration.shutdownSignals = []
        configuration.engine.idlePoll = .milliseconds(200)
        configure(&configuration)
        let server = try await HookproxyServer(config: config, logger: testLogger, configuration: configuration)
        let task = Task { try await server.run() }
        let ports = try await server.listeningPorts()
        return TestServer(directory: directory, server: server, ports: ports, task: task)
    }

    /// Posts a webhook to `source`.
    func post(_ source: String, json: String, headers: [(String, String)] = []) async throws -> TestResponse {
        try await send(
            .POST, "\(ingestURL)/webhooks/\(source)", body: Array(json.utf8), headers: [("Content-Type", "application/json")] + headers)
    }

    /// The stored event, with deliveries and attempts.
    func detail(_ id: String) async throws -> EventDetail? { try await store.eventDetail(id: id) }

    /// Waits until every delivery of event `id` has one of `statuses`.
    func waitForDeliveries(of id: String, toBe statuses: Set<DeliveryStatus> = [.delivered], timeout: Duration = .seconds(20))
        async throws
    {
        do {
            try await waitUntil("deliveries of \(id) to be \(statuses.map(\.rawValue))", timeout: timeout) {
                guard let detail = try await self.detail(id), !detail.deliveries.isEmpty else { return false }
                return detail.deliveries.allSatisfy { statuses.contains($0.status) }
            }
        } catch let timedOut as TimedOut {
            // What the deliveries and their lanes look like now, so that a stall seen once can be understood.
            throw TimedOut(what: "\(timedOut.what); now: \(await describeDeliveries(of: id))")
        }
    }

    /// Each delivery of event `id` (status, attempts, when due, last error, its answers) and the destinations' lanes as
    /// the admin API shows them, for a failure message.
    func describeDeliveries(of id: String) async -> String {
        guard let detail = try? await self.detail(id) else { return "the event cannot be read" }
        let now = Clock.milliseconds()
        let deliveries = detail.deliveries.map { delivery in
            let due = delivery.nextAttemptAt.map { "due in \($0 - now) ms" } ?? "not due"
            let answers = delivery.history.map { $0.httpStatus.map(String.init) ?? "-" }
            return
                "\(delivery.destination) \(delivery.status.rawValue), \(delivery.attempts) attempts, \(due), answers \(answers), last error \(delivery.lastError ?? "none")"
        }
        let lanes = (try? await send(.GET, "\(adminURL)/admin/destinations")).map { String(decoding: $0.body, as: UTF8.self) } ?? "?"
        return deliveries.joined(separator: "; ") + "; lanes \(lanes)"
    }

    /// Graceful shutdown; returns when the server has stopped.
    func stop() async throws {
        await server.shutdown()
        try await task.value
    }
}

/// The `server` and `storage` sections every test configuration starts with.
func testServerSection(listen: String = "127.0.0.1:0", admin: String = "127.0.0.1:0") -> String {
    """
    server:
      listen: "\(listen)"
      admin_listen: "\(admin)"
    storage:
      url: "sqlite:data/hookproxy.sqlite"
    defaults:
      timeout: 5s
      retry:
        schedule: [200ms, 200ms, 200ms]
        jitter: 0

    """
}
