import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

@testable import Host

/// The storage backends the store suite runs against, and fresh databases for them.
///
/// PostgreSQL tests use the server at `HOOKPROXY_TEST_POSTGRES_URL` (default
/// `postgres://hookproxy:hookproxy@127.0.0.1:5432/hookproxy_test?sslmode=disable`, what `.ci/run` sets up; the role
/// needs CREATEDB). Each test gets a database of its own, created from that connection and dropped by a later test
/// run. When no server answers, those tests fail and say how to start one; `HOOKPROXY_TEST_POSTGRES_URL=off` leaves
/// them out.
enum TestBackend: String, CustomStringConvertible, Sendable, CaseIterable {
    case sqlite
    case postgres

    var description: String { rawValue }

    static let postgresURL =
        ProcessInfo.processInfo.environment["HOOKPROXY_TEST_POSTGRES_URL"]
        ?? "postgres://hookproxy:hookproxy@127.0.0.1:5432/hookproxy_test?sslmode=disable"

    /// The backends to test: both, unless PostgreSQL was turned off.
    static var enabled: [TestBackend] { postgresURL == "off" ? [.sqlite] : [.sqlite, .postgres] }
    static var postgresEnabled: Bool { postgresURL != "off" }
}

/// A database made for one test: its `storage.url`, and how to drop it.
struct TestDatabase: Sendable {
    let backend: TestBackend
    let url: String
    private let name: String?

    /// A new, empty database.
    static func make(_ backend: TestBackend) async throws -> TestDatabase {
        switch backend {
        case .sqlite:
            return TestDatabase(backend: backend, url: "sqlite:" + TestPaths.temporaryDirectory("store") + "/hookproxy.sqlite", name: nil)
        case .postgres:
            await leftovers.value
            let name =
                "hookproxy_t_\(getpid())_" + UUID().uuidString.prefix(8).lowercased().replacingOccurrences(of: "-", with: "")
            try await Self.administer("CREATE DATABASE \(name)")
            var components = URLComponents(string: TestBackend.postgresURL)!
            components.path = "/" + name
            return TestDatabase(backend: backend, url: components.string!, name: name)
        }
    }

    /// Opens a store on this database (a new instance, on PostgreSQL); `instanceTimeout` (PostgreSQL) also sets how
    /// often this instance records that it is alive (a third of it). Its pool is smaller than the default: the suite
    /// runs many stores at once against one server, whose `max_connections` they share. On PostgreSQL a call waits up
    /// to `operationTimeout` (30 s, against the product's 5 s): these stores serve tests of what the store does, on a
    /// two-core machine running the whole suite at once, where a query's answer has waited for a thread more than 5 s;
    /// the deadline itself is tested with stores made for it.
    func open(instanceTimeout: Duration = .seconds(15), maximumConnections: Int = 6, operationTimeout: Duration = .seconds(30))
        async throws -> any EventStore
    {
        let store: any EventStore
        switch backend {
        case .sqlite:
            store = try await openEventStore(
                StorageConfig(backend: .sqlite(path: String(url.dropFirst("sqlite:".count)))), logger: testLogger)
        case .postgres:
            store = try await PostgresStore(
                url: url, logger: testLogger, instanceTimeout: instanceTimeout, maximumConnections: maximumConnections,
                operationTimeout: operationTimeout)
        }
        runServices(of: store)
        return store
    }

    /// Drops, once per test process and before its first database is made, the test databases of processes that have
    /// ended (named `hookproxy_t_<pid>_…`; older names without a process id are all left over).
    private static let leftovers = Task {
        do {
            let connection = try await connect(id: 4)
            defer { Task { try? await connection.close() } }
            let rows = try await connection.query(
                "SELECT datname FROM pg_database WHERE datname LIKE 'hookproxy\\_t\\_%'", logger: testLogger)
            var names: [String] = []
            for try await name in rows.decode(String.self) { names.append(name) }
            for name in names where !isOwnedByLiveProcess(name) {
                _ = try? await connection.query(
                    PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"), logger: testLogger)
            }
        } catch {
            // No server: the first CREATE DATABASE reports it.
        }
    }

    /// Whether `name` (`hookproxy_t_<pid>_<random>`) belongs to a process that is still running.
    private static func isOwnedByLiveProcess(_ name: String) -> Bool {
        let parts = name.split(separator: "_")
        guard parts.count == 4, let pid = Int32(parts[2]) else { return false }
        return kill(pid, 0) == 0 || errno == EPERM
    }

    /// How many connections the server has to the database `name` whose last statement contains `running` (asked on a
    /// connection of its own, to another database).
    static func connections(to name: String, running: String = "") async throws -> Int {
        let connection = try await connect(id: 3)
        defer { Task { try? await connection.close() } }
        let pattern = "%" + running + "%"
        let rows = try await connection.query(
            "SELECT count(*)::int FROM pg_stat_activity WHERE datname = \(name) AND query LIKE \(pattern)", logger: testLogger)
        for try await count in rows.decode(Int.self) { return count }
        return 0
    }

    /// Runs one statement on the server of `HOOKPROXY_TEST_POSTGRES_URL`, on a connection of its own.
    static func administer(_ sql: String) async throws {
        let connection: PostgresConnection
        do {
            connection = try await connect(id: 1)
        } catch {
            throw PostgresUnavailable(reason: PostgresStore.describe(error))
        }
        defer { Task { try? await connection.close() } }
        try await connection.query(PostgresQuery(unsafeSQL: sql), logger: testLogger)
    }

    /// A plain connection of its own (no store, no pool, no deadline) to the server of `HOOKPROXY_TEST_POSTGRES_URL`:
    /// to the database `database`, or to that URL's own. The caller closes it.
    static func connect(database: String? = nil, id: Int) async throws -> PostgresConnection {
        let url = try PostgresURL(TestBackend.postgresURL)
        let configuration = PostgresConnection.Configuration(
            host: url.host, port: url.port, username: url.username, password: url.password, database: database ?? url.database,
            tls: .disable)
        return try await PostgresConnection.connect(configuration: configuration, id: id, logger: testLogger)
    }
}

struct PostgresUnavailable: Error, CustomStringConvertible {
    var reason: String
    var description: String {
        """
        no PostgreSQL for the tests at \(TestBackend.postgresURL): \(reason). Start one (.ci/run shows how: \
        pg_ctlcluster, a role hookproxy with CREATEDB, a database hookproxy_test), point HOOKPROXY_TEST_POSTGRES_URL at \
        yours, or set it to 'off' to leave the PostgreSQL tests out.
        """
    }
}

/// Runs `body` with a fresh database of `backend`. A PostgreSQL database is dropped by the next test process that starts
/// (``TestDatabase/leftovers``), not at the test's end: `DROP DATABASE` makes the server run an immediate checkpoint,
/// which, with the suite's other databases busy, once took 5.4 s of fsync (2026-12-07) and stalled every concurrent
/// test's queries past the store's 5 s deadline. SQLite files stay with the temporary directory.
func withTestDatabase(_ backend: TestBackend, _ body: (TestDatabase) async throws -> Void) async throws {
    try await body(try await TestDatabase.make(backend))
}

/// Runs `body` with a store opened on a fresh database of `backend`, closed afterwards.
func withTestStore(_ backend: TestBackend, _ body: (any EventStore) async throws -> Void) async throws {
    try await withTestDatabase(backend) { database in
        let store = try await database.open()
        do {
            try await body(store)
        } catch {
            try? await store.close()
            throw error
        }
        try await store.close()
    }
}

/// A test server's `sources.yaml` on the store `storageURL`: source `app` routed to one generic destination `out` at
/// the sink's `/out`, which receives the event document (`mode: envelope`: `id`, `payload`, …). On PostgreSQL its pool
/// is small: the suite runs many servers at once against one database server.
func oneDestinationConfig(storageURL: String, sink: RecordingSink) -> String {
    let pool = storageURL.hasPrefix("postgres") ? "\n  max_connections: 8" : ""
    let storage = testServerSection().replacingOccurrences(
        of: "  url: \"sqlite:data/hookproxy.sqlite\"", with: "  url: \"\(storageURL)\"" + pool)
    return storage + """
        destinations:
          out: { formatter: generic, url: "\(sink.url)/out", options: { mode: envelope } }
        sources:
          app: { destinations: [out] }
        """
}

/// Runs the store's services (PostgreSQL: its pool, heartbeat and `LISTEN`) until the store is closed, as a server's
/// group or a CLI command does.
func runServices(of store: any EventStore) {
    let group = ServiceGroup(configuration: .init(services: store.services, logger: testLogger))
    Task { try? await group.run() }
}
