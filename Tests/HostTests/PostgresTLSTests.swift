import Foundation
import PostgresNIO
import Testing

@testable import Host

/// `sslmode` means what it means to libpq, against a real PostgreSQL with TLS on (`.ci/run` gives the test server a
/// certificate from a test CA that names `localhost` only).
@Suite("PostgreSQL TLS", .enabled(if: TestBackend.postgresEnabled))
struct PostgresTLSTests {
    /// Where `.ci/run` writes the test CA (`ca.pem`) and a CA that signed nothing (`other-ca.pem`).
    static let directory = ProcessInfo.processInfo.environment["HOOKPROXY_TEST_POSTGRES_TLS"] ?? "/var/lib/hookproxy-test-tls"

    /// Whether the store's connections to `database` are encrypted: nil when it has none, else whether all are.
    static func encrypted(database: String) async throws -> Bool? {
        let connection = try await TestDatabase.connect(id: 2)
        defer { Task { try? await connection.close() } }
        let rows = try await connection.query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = \(database)", logger: testLogger)
        var states: [Bool] = []
        for try await ssl in rows.decode(Bool.self) { states.append(ssl) }
        return states.isEmpty ? nil : states.allSatisfy { $0 }
    }

    @Test("disable is plain; prefer and require encrypt without checking; verify-ca checks the chain; verify-full the host too")
    func sslModes() async throws {
        let ca = Self.directory + "/ca.pem"
        let other = Self.directory + "/other-ca.pem"
        try #require(
            FileManager.default.fileExists(atPath: ca) && FileManager.default.fileExists(atPath: other),
            "no test CA at \(Self.directory): run the PostgreSQL part of .ci/run (it turns TLS on for the test server)")
        let database = try await TestDatabase.make(.postgres)
        let name = try #require(URLComponents(string: database.url)?.path.dropFirst().description)

        /// Opens a store on the test database at `host` with `query`; whether its connections were encrypted, or why it
        /// could not open.
        func open(host: String, _ query: String) async -> Result<Bool?, StoreError> {
            guard var components = URLComponents(string: database.url) else { return .failure(.unavailable("bad URL")) }
            components.host = host
            components.percentEncodedQuery = query
            let store: PostgresStore
            do {
                store = try await PostgresStore(url: components.string ?? "", logger: testLogger, maximumConnections: 2)
            } catch let error as StoreError {
                return .failure(error)
            } catch {
                return .failure(.unavailable(PostgresStore.describe(error)))
            }
            runServices(of: store)
            let encrypted: Result<Bool?, StoreError>
            do {
                // The pool connects when it is first used.
                try await store.ping()
                encrypted = .success(try await Self.encrypted(database: name))
            } catch let error as StoreError {
                encrypted = .failure(error)
            } catch {
                encrypted = .failure(.unavailable(PostgresStore.describe(error)))
            }
            // Closed whatever happened: the next case must see only its own connections.
            try? await store.close()
            do {
                try await waitUntil("the store's connections to end") { try await Self.encrypted(database: name) == nil }
            } catch {
                Issue.record("\(host) \(query): \(error)")
            }
            return encrypted
        }

        let cases: [(host: String, query: String, encrypted: Bool?)] = [
            ("127.0.0.1", "sslmode=disable", false),
            // prefer and require take the test CA's certificate without checking it, as libpq does.
            ("127.0.0.1", "sslmode=prefer", true),
            ("127.0.0.1", "sslmode=allow", true),
            ("127.0.0.1", "sslmode=require", true),
            ("127.0.0.1", "sslmode=verify-ca&sslrootcert=\(ca)", true),
            // The certificate names localhost, not 127.0.0.1: verify-ca does not look, verify-full does.
            ("localhost", "sslmode=verify-full&sslrootcert=\(ca)", true),
            ("127.0.0.1", "sslmode=verify-ca&sslrootcert=\(other)", nil),
            // libpq's rule: require with a root file checks the chain like verify-ca.
            ("127.0.0.1", "sslmode=require&sslrootcert=\(other)", nil),
            // The system's roots do not include the test CA.
            ("localhost", "sslmode=verify-full&sslrootcert=system", nil),
        ]
        for (host, query, expected) in cases {
            let result = await open(host: host, query)
            switch (result, expected) {
            case (.success(let encrypted), .some(let expected)):
                #expect(encrypted == expected, "\(host) \(query): encrypted \(String(describing: encrypted))")
            case (.failure(let error), nil):
                #expect("\(error)".contains("cannot open PostgreSQL database"), "\(host) \(query): \(error)")
                #expect(!"\(error)".contains("hookproxy:hookproxy"), "the password is never shown")
            case (.success, nil):
                Issue.record("\(host) \(query) connected: the certificate should have been refused")
            case (.failure(let error), .some):
                Issue.record("\(host) \(query) did not connect: \(error)")
            }
        }
        // What each mode asks of the certificate (no second name for the test server resolves here, so a wrong host
        // name is checked as this mapping, and NIOSSL's host check as verify-full's success on the right one).
        let verification = try ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"].map {
            try PostgresURL("postgres://hookproxy@db.internal/x?sslmode=\($0)").verification
        }
        #expect(verification == [.none, .none, .none, .none, .noHostnameVerification, .fullVerification])
        #expect(try PostgresURL("postgres://hookproxy@db.internal/x").sslMode == .prefer, "libpq's default")
        // verify-full checks a name; an address is refused before any connection is made.
        #expect(throws: PostgresURL.Invalid.self) {
            try PostgresURL("postgres://hookproxy@127.0.0.1/\(name)?sslmode=verify-full&sslrootcert=\(ca)")
        }
    }
}
