import Foundation
import GRDB
import PluginKit
import Testing

@testable import Host

/// Headers that carry a credential are never stored: not in the database, the admin API, the CLI, a plugin's event
/// document or what a destination receives.
@Suite("Header redaction")
struct RedactionTests {
    /// The secret values sent, each in a header that must not be stored.
    static let secrets: [(header: String, value: String)] = [
        ("X-Gitlab-Token", "gitlab-shared-secret-1"), ("Authorization", "Bearer token-2"), ("Cookie", "session=cookie-3"),
        ("X-Api-Key", "api-key-4"), ("X-Client-Secret", "client-secret-5"), ("X-Extra-Credential", "extra-6"),
        ("X-Source-Credential", "source-7"),
    ]

    @Test("credential headers reach the store, the admin API, the CLI, plugins and destinations only as [redacted]")
    func redactedEverywhere() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let yaml =
            testServerSection().replacingOccurrences(of: "  timeout: 5s", with: "  timeout: 5s\n  redact_headers: [X-Extra-Credential]")
                + """
                destinations:
                  out: { formatter: generic, url: "\(sink.url)/out", options: { mode: envelope } }
                sources:
                  gitlab:
                    verify: { preset: gitlab, secret: "gitlab-shared-secret-1" }
                    redact_headers: [X-Source-Credential]
                    mapping: { event: "header:X-Gitlab-Event", token: "header:X-Gitlab-Token" }
                    destinations: [out]
                """
        let server = try await TestServer.start(yaml: yaml)
        let answer = try await server.post(
            "gitlab", json: #"{"object_kind":"push"}"#, headers: Self.secrets + [("X-Gitlab-Event", "Push Hook")])
        #expect(answer.status == 202, "\(answer.json?.serialized() ?? "")")
        let id = try #require(answer.json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id)

        // The store.
        let stored = try #require(try await server.detail(id))
        let headers = try JSONValue(parsing: stored.event.headersJSON)
        for (header, _) in Self.secrets {
            #expect(headers[header.lowercased()] == .string(HeaderRedaction.placeholder), "\(header): \(headers.serialized())")
        }
        #expect(headers["x-gitlab-event"] == "Push Hook")
        // A mapping that reads a redacted header gets the placeholder too.
        #expect(try JSONValue(parsing: stored.event.fieldsJSON)["token"] == .string(HeaderRedaction.placeholder))
        // The admin API, the formatter's event document (what the destination received) and the CLI.
        let admin = try await send(.GET, "\(server.adminURL)/admin/events/\(id)")
        let delivered = try #require(sink.requests("/out").first)
        let show = try await shell("'\(PluginLoader.executableDirectory)/hookproxy' show --config '\(server.directory)/sources.yaml' \(id)")
        #expect(show.status == 0, "\(show.output)")
        for (header, value) in Self.secrets {
            #expect(!String(decoding: admin.body, as: UTF8.self).contains(value), "the admin API shows \(header)")
            #expect(!delivered.text.contains(value), "the destination received \(header)")
            #expect(!show.output.contains(value), "hookproxy show prints \(header)")
        }
        #expect(delivered.json?["headers"]?["x-gitlab-token"] == .string(HeaderRedaction.placeholder))
        #expect(
            try await send(.GET, "\(server.adminURL)/admin/config").json?["sources"]?["gitlab"]?["redact_headers"]
                == ["x-extra-credential", "x-source-credential"])
        try await server.stop()
        try await sink.stop()
    }

    @Test("a migration scrubs credential headers from events stored before redaction existed", arguments: TestBackend.enabled)
    func migrationScrubs(backend: TestBackend) async throws {
        try await withTestDatabase(backend) { database in
            let store = try await database.open()
            var event = StoreContractTests.event("old")
            event.event.headersJSON =
                #"{"x-gitlab-event":"Push Hook","x-gitlab-token":"s3cret","authorization":"Bearer t","x-api-key":"k","x-request-id":"r1"}"#
            _ = try await store.insert([event])
            try await store.close()
            // Stored as an older hookproxy stored it; the scrub runs again as if the database had never had it.
            switch backend {
            case .sqlite:
                let queue = try DatabaseQueue(path: String(database.url.dropFirst("sqlite:".count)))
                try await queue.write { db in
                    try db.execute(sql: "DELETE FROM grdb_migrations WHERE identifier = 'v7: credentials scrubbed from stored headers'")
                }
                try queue.close()
            case .postgres:
                try await TestDatabase.administerOn(database, "DELETE FROM hookproxy_migrations WHERE version = 4")
            }
            let reopened = try await database.open()
            let detail = try #require(try await reopened.eventDetail(id: "old"))
            let headers = try JSONValue(parsing: detail.event.headersJSON)
            #expect(headers["x-gitlab-token"] == .string(HeaderRedaction.placeholder), "\(headers.serialized())")
            #expect(headers["authorization"] == .string(HeaderRedaction.placeholder))
            #expect(headers["x-api-key"] == .string(HeaderRedaction.placeholder))
            #expect(headers["x-gitlab-event"] == "Push Hook")
            #expect(headers["x-request-id"] == "r1")
            #expect(!detail.event.headersJSON.contains("s3cret"))
            try await reopened.close()
        }
    }

    @Test("the byte search behind redaction finds a word exactly where Foundation's contains does, in random header names")
    func byteSearchAgrees() {
        var generator = SystemRandomNumberGenerator()
        // A small alphabet, so that the words occur often, at the start, the end and overlapping themselves.
        let alphabet = Array("tokenapi-kys_crwd".utf8)
        let words = HeaderRedaction.credentialParts + ["t", "tt", "x-", ""]
        // One #expect per kind, not per name: this runs on the cooperative pool the in-process servers of other suites
        // share, and 50,000 expectations held one of its two threads for seconds on a loaded machine.
        var found = 0
        var disagreements: [String] = []
        for _ in 0..<1_000 {
            let length = Int.random(in: 0...14, using: &generator)
            let name = String(decoding: (0..<length).map { _ in alphabet.randomElement(using: &generator) ?? 0x74 }, as: UTF8.self)
            for word in words where !word.isEmpty {
                let expected = name.contains(word)
                if name.containsUTF8(Array(word.utf8)) != expected { disagreements.append("\(name) / \(word)") }
                if expected { found += 1 }
            }
            if HeaderRedaction().redacts(name) != HeaderRedaction.credentialParts.contains(where: { name.contains($0) }) {
                disagreements.append("redacts \(name)")
            }
        }
        #expect(disagreements.isEmpty, "\(disagreements.prefix(5))")
        #expect(found > 200)
        #expect("x-gitlab-token".containsUTF8(Array("token".utf8)))
        #expect(!"x-tok".containsUTF8(Array("token".utf8)))
        #expect("anything".containsUTF8([]))
        #expect(HeaderRedaction(extra: ["x-signature"]).redacts("x-signature"))
        #expect(!HeaderRedaction().redacts("x-github-event"))
    }
}
