import Foundation
import Logging
import PostgresNIO

/// Where each benchmark server keeps its store: a new SQLite file, or a new database on the PostgreSQL server of
/// `--postgres` (created through that URL, whose role needs CREATEDB, and dropped when the run ends).
final class BenchDatabases {
    private let postgres: URLComponents?
    private let work: String
    private var created: [String] = []
    private var made = 0
    private let logger = Logger(label: "hookproxy-bench")

    init(postgres: String?, work: String) throws {
        self.work = work
        guard let postgres else {
            self.postgres = nil
            return
        }
        guard let components = URLComponents(string: postgres), ["postgres", "postgresql"].contains(components.scheme),
            components.host != nil, components.user != nil
        else {
            throw BenchError("--postgres \(postgres): not a URL of the form postgres://user:password@host:5432/database")
        }
        self.postgres = components
    }

    var isPostgres: Bool { postgres != nil }

    /// The server's own description of itself, for the report (`nil` on SQLite).
    func serverVersion() async throws -> String? {
        guard postgres != nil else { return nil }
        var version: String?
        try await withConnection { connection in
            for try await text in try await connection.query("SHOW server_version", logger: self.logger).decode(String.self) {
                version = text
            }
        }
        return version.map { "PostgreSQL \($0) at \(postgres?.host ?? ""):\(postgres?.port ?? 5432)" }
    }

    /// A `storage.url` for a new, empty store named after `name`.
    func make(_ name: String) async throws -> String {
        made += 1
        guard var components = postgres else { return "sqlite:\(work)/\(name)-\(made).sqlite" }
        let database = "hookproxy_bench_\(getpid())_\(made)"
        try await withConnection { connection in
            try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(database)"), logger: self.logger)
        }
        created.append(database)
        components.path = "/" + database
        return components.string ?? ""
    }

    /// Drops the databases this run created (their servers must have stopped).
    func dropAll() async {
        guard postgres != nil else { return }
        for database in created {
            try? await withConnection { connection in
                try await connection.query(
                    PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(database) WITH (FORCE)"), logger: self.logger)
            }
        }
        created = []
    }

    private func withConnection(_ body: (PostgresConnection) async throws -> Void) async throws {
        guard let postgres, let host = postgres.host, let user = postgres.user else { return }
        let configuration = PostgresConnection.Configuration(
            host: host, port: postgres.port ?? 5432, username: user.removingPercentEncoding ?? user,
            password: postgres.password.map { $0.removingPercentEncoding ?? $0 },
            database: postgres.path.count > 1 ? String(postgres.path.dropFirst()) : nil,
            // The benchmark runs on loopback: no TLS for its own administrative connection.
            tls: .disable)
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
        } catch {
            throw BenchError("cannot connect to PostgreSQL at \(host):\(postgres.port ?? 5432): \(String(reflecting: error))")
        }
        do {
            try await body(connection)
        } catch {
            try? await connection.close()
            throw BenchError("PostgreSQL at \(host): \(String(reflecting: error))")
        }
        try await connection.close()
    }
}
