import Foundation
import PluginKit
import Testing

@testable import Host

@Suite("Configuration")
struct ConfigTests {
    /// Loads YAML text as `/etc/hookproxy/sources.yaml` and returns the problems' descriptions (empty when valid).
    func problems(_ yaml: String, environment: [String: String] = [:]) -> [String] {
        do {
            _ = try ConfigLoader(environment: environment).load(yaml: yaml, file: "/etc/hookproxy/sources.yaml")
            return []
        } catch {
            return error.problems.map(\.description)
        }
    }

    static let minimal = """
        destinations:
          chat:
            formatter: discord
            url: "https://discord.example/api/webhooks/1/token"
        sources:
          app:
            destinations: [chat]
        """

    @Test("the shipped example loads with nothing set in the environment, and all its plugins are found")
    func exampleLoads() async throws {
        let config = try ConfigLoader(environment: [:]).load(file: TestPaths.packageRoot + "/examples/sources.yaml")
        #expect(config.sources.keys.sorted() == ["github", "inbox"])
        #expect(config.destinations["ops-discord"]?.url == "http://127.0.0.1:8080/webhooks/inbox")
        #expect(config.server.adminToken == nil)
        #expect(config.storage.backend == .sqlite(path: TestPaths.packageRoot + "/examples/data/hookproxy.sqlite"))
        let github = try #require(config.sources["github"])
        #expect(github.routes.map(\.destination) == ["ops-discord", "team-slack", "audit"])
        #expect(github.routes[2].overridesFormatter && github.routes[2].options == ["mode": "envelope"])
        #expect(github.mapping.map(\.name) == ["repo", "action", "actor"])
        #expect(github.requiresJSON)
        let runtime = try await Runtime.make(config: config, logger: testLogger)
        #expect(runtime.instances.formatter(source: "github", destination: "audit") != nil)
        runtime.plugins.shutdown()
    }

    @Test("plugins: isolation, deadline, memory and workers, with per-plugin overrides; mistakes name their key")
    func pluginSettings() async throws {
        let yaml =
            """
            plugins:
              isolation: process
              call_timeout: 750ms
              memory_limit: 128MiB
              workers: 3
              overrides:
                discord: { isolation: in_process, workers: 1 }
            storage:
              journal: state/calls
            defaults:
              max_crashes: 5

            """ + Self.minimal.replacingOccurrences(of: "    formatter: discord", with: "    formatter: discord\n    max_crashes: 2")
        let config = try ConfigLoader(environment: [:]).load(yaml: yaml, file: "/etc/hookproxy/sources.yaml")
        #expect(
            config.plugins.settings(for: "slack")
                == PluginSettings(isolation: .process, callTimeout: .milliseconds(750), memoryLimit: 128 << 20, workers: 3))
        #expect(
            config.plugins.settings(for: "discord")
                == PluginSettings(isolation: .inProcess, callTimeout: .milliseconds(750), memoryLimit: 128 << 20, workers: 1))
        #expect(config.storage.journalPath == "/etc/hookproxy/state/calls")
        #expect(config.destinations["chat"]?.maxCrashes == 2)
        let defaults = try ConfigLoader(environment: [:]).load(yaml: Self.minimal, file: "/etc/hookproxy/sources.yaml")
        #expect(defaults.plugins.settings(for: "discord") == PluginSettings())
        #expect(PluginSettings() == PluginSettings(isolation: .process, callTimeout: .seconds(2), memoryLimit: 256 << 20, workers: 2))
        #expect(defaults.storage.journalPath == "/etc/hookproxy/data/hookproxy.sqlite.inflight")
        #expect(defaults.destinations["chat"]?.maxCrashes == 3)

        #expect(
            problems(
                "plugins:\n  isolation: sandbox\n  memory_limit: 1MB\n  workers: 0\n  call_timeout: 0s\n  overrides:\n    discord: { isolatoin: process }\n"
                    + Self.minimal) == [
                    "/etc/hookproxy/sources.yaml:2: plugins.isolation: must be one of process, in_process, not 'sandbox'",
                    "/etc/hookproxy/sources.yaml:3: plugins.memory_limit: must be a size of at least 64MB, such as 256MB or 1GB, not '1MB'",
                    "/etc/hookproxy/sources.yaml:4: plugins.workers: must be a whole number from 1 to 64, not '0'",
                    "/etc/hookproxy/sources.yaml:5: plugins.call_timeout: must be from 10ms to 1h",
                    "/etc/hookproxy/sources.yaml:7: plugins.overrides.discord.isolatoin: unknown key (did you mean 'isolation'?); allowed here: isolation, call_timeout, memory_limit, workers",
                ])
        // An override for a plugin that is not loaded is refused when the plugins are.
        let typo = try ConfigLoader(environment: [:]).load(
            yaml: "plugins:\n  overrides:\n    discrod: { isolation: in_process }\n" + Self.minimal, file: "/etc/hookproxy/sources.yaml")
        do {
            let runtime = try await Runtime.make(config: typo, logger: testLogger)
            runtime.plugins.shutdown()
            Issue.record("an override for no plugin was accepted")
        } catch {
            #expect(
                error.problems.map(\.description).contains(
                    "/etc/hookproxy/sources.yaml:3: plugins.overrides.discrod: no loaded plugin is named 'discrod' (did you mean 'discord'?)"
                ), "\(error)")
        }
    }

    @Test("a full file sets every section, with defaults inherited by destinations")
    func fullFile() throws {
        let yaml = """
            server:
              listen: "[::1]:8081"
              admin_listen: "127.0.0.1:9191"
              admin_token: "${TOKEN}"
              max_body_bytes: 2048
            storage:
              url: "sqlite:/var/lib/hookproxy/db.sqlite"
              retention: 7d
            plugins:
              directory: /opt/hookproxy/plugins
            defaults:
              timeout: 3s
              retry:
                exponential: { initial: 1s, multiplier: 3, max: 1m, attempts: 4 }
                jitter: 0
            destinations:
              chat:
                formatter: discord
                url: "${HOOK_URL:-https://fallback.example/hook}"
                headers: { X-Env: prod }
                options: { title: "{{fields.repo}}", color: 255, fields: false }
              slow:
                formatter: generic
                url: "https://slow.example/in"
                timeout: 30s
                retry: { schedule: [1s, 2s] }
            sources:
              gh:
                idempotency_key: "header:X-GitHub-Delivery"
                mapping:
                  repo: { path: "$.repository.full_name", required: true }
                  kind: "header:X-GitHub-Event"
                  first: "$.commits[0]['id']"
                destinations:
                  - chat
                  - { to: slow, formatter: generic, options: { mode: envelope } }
                replay: false
            """
        let config = try ConfigLoader(environment: ["TOKEN": "s3cret"]).load(yaml: yaml, file: "/etc/hookproxy/sources.yaml")
        #expect(config.server.listen == ListenAddress(host: "::1", port: 8081))
        #expect(config.server.adminToken == "s3cret")
        #expect(config.server.maxBodyBytes == 2048)
        #expect(config.storage.retention == .seconds(7 * 86_400))
        #expect(config.plugins.directory == "/opt/hookproxy/plugins")
        let chat = try #require(config.destinations["chat"])
        #expect(chat.url == "https://fallback.example/hook")
        #expect(chat.timeout == .seconds(3))
        #expect(chat.retry.maximumAttempts == 4)
        #expect(chat.retry.delay(afterAttempt: 2, random: 0) == .seconds(3))
        #expect(chat.retry.delay(afterAttempt: 4, random: 0) == nil)
        #expect(chat.options == ["title": "{{fields.repo}}", "color": 255, "fields": false])
        let slow = try #require(config.destinations["slow"])
        #expect(slow.retry.backoff == .schedule([.seconds(1), .seconds(2)]))
        #expect(slow.retry.jitter == 0)
        let gh = try #require(config.sources["gh"])
        #expect(gh.replay == false)
        #expect(gh.mapping.map(\.selector.description) == ["$.repository.full_name", "header:x-github-event", "$.commits[0].id"])
        #expect(gh.idempotencyKey == .header("x-github-delivery"))
    }

    @Test(
        "storage.url takes sqlite: and postgres:// URLs, instance_timeout and max_connections go with PostgreSQL; a bad one is an error naming the key"
    )
    func storageURL() throws {
        let postgres = try ConfigLoader(environment: ["PGPASSWORD": "s3cret"]).load(
            yaml: "storage:\n  url: \"postgres://hook:${PGPASSWORD}@db.internal:6432/hp?sslmode=require\"\n" + Self.minimal,
            file: "/etc/hookproxy/sources.yaml")
        #expect(postgres.storage.backend == .postgres(url: "postgres://hook:s3cret@db.internal:6432/hp?sslmode=require"))
        let parsed = try PostgresURL("postgres://hook:s3cret@db.internal:6432/hp?sslmode=require")
        #expect(parsed.host == "db.internal" && parsed.port == 6432 && parsed.username == "hook" && parsed.password == "s3cret")
        #expect(parsed.database == "hp" && parsed.sslMode == .require)
        #expect(parsed.display == "postgres://hook@db.internal:6432/hp", "never the password")

        let cases: [(url: String, says: String)] = [
            ("postgres://db.internal/hp", "names no user"),
            (
                "postgres://hook@db.internal/hp?sslmode=sometimes",
                "sslmode=sometimes; use one of disable, allow, prefer, require, verify-ca, verify-full"
            ),
            ("postgres://hook@db.internal/hp?pool=3", "unknown parameter 'pool' (only sslmode and sslrootcert are understood)"),
            ("postgres://hook@db.internal/hp?sslmode=verify-full&sslrootcert=ca.pem", "give the CA file's absolute path, or system"),
            ("postgres://hook@db.internal/hp?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem", "cannot be read as PEM certificates"),
            ("mysql://hook@db/hp", "must start with sqlite: or postgres://"),
        ]
        for (url, says) in cases {
            let found = problems("storage:\n  url: \"\(url)\"\n" + Self.minimal)
            #expect(found.count == 1, "\(url)")
            #expect(found.first?.contains("sources.yaml:2") == true, "\(found)")
            #expect(found.first?.contains("storage.url") == true, "\(found)")
            #expect(found.first?.contains(says) == true, "\(url): \(found)")
        }

        let timed = try ConfigLoader().load(
            yaml: "storage:\n  instance_timeout: 6s\n  url: \"postgres://hook@db/hp\"\n" + Self.minimal, file: "/etc/hookproxy/sources.yaml"
        )
        #expect(timed.storage.instanceTimeout == .seconds(6))
        #expect(postgres.storage.instanceTimeout == .seconds(15))
        #expect(
            problems("storage:\n  url: \"postgres://hook@db/hp\"\n  instance_timeout: 1s\n" + Self.minimal) == [
                "/etc/hookproxy/sources.yaml:3: storage.instance_timeout: must be at least 3s (instances record that they are alive every third of it)"
            ])
        #expect(
            problems("storage:\n  instance_timeout: 10s\n" + Self.minimal) == [
                "/etc/hookproxy/sources.yaml:2: storage.instance_timeout: applies to a postgres:// storage.url only (one process owns an SQLite file)"
            ])
        #expect(
            problems("storage:\n  max_size: 1GB\n  url: \"postgres://hook@db/hp\"\n" + Self.minimal) == [
                "/etc/hookproxy/sources.yaml:2: storage.max_size: applies to an sqlite: storage.url only (size a PostgreSQL database with its own quotas and retention)"
            ])
        let pooled = try ConfigLoader().load(
            yaml: "storage:\n  max_connections: 8\n  url: \"postgres://hook@db/hp\"\n" + Self.minimal, file: "/etc/hookproxy/sources.yaml")
        #expect(pooled.storage.maximumConnections == 8)
        #expect(postgres.storage.maximumConnections == 20)
        #expect(
            problems("storage:\n  url: \"postgres://hook@db/hp\"\n  max_connections: 1\n" + Self.minimal) == [
                "/etc/hookproxy/sources.yaml:3: storage.max_connections: must be a whole number from 2 to 1000, not '1'"
            ])
        #expect(
            problems("storage:\n  max_connections: 8\n" + Self.minimal) == [
                "/etc/hookproxy/sources.yaml:2: storage.max_connections: applies to a postgres:// storage.url only (SQLite has one writer and no pool)"
            ])
    }

    @Test("an unknown key is an error at its line, with a suggestion")
    func unknownKey() {
        let yaml = Self.minimal.replacingOccurrences(of: "    url:", with: "    timout: 5s\n    url:")
        #expect(
            problems(yaml) == [
                "/etc/hookproxy/sources.yaml:4: destinations.chat.timout: unknown key (did you mean 'timeout'?); allowed here: formatter, url, options, headers, timeout, retry, rate_limit, max_concurrency, ordering, circuit_breaker, signing_secret, allow_insecure, paused, max_retry_after, max_crashes, store_response"
            ])
    }

    @Test("a value of the wrong type is an error naming the key and what it must be")
    func wrongType() {
        let yaml = "server:\n  max_body_bytes: lots\n" + Self.minimal
        #expect(
            problems(yaml) == [
                "/etc/hookproxy/sources.yaml:2: server.max_body_bytes: must be a whole number from 1 to 1073741824, not 'lots'"
            ])
        let list = Self.minimal.replacingOccurrences(of: "destinations: [chat]", with: "destinations: chat")
        #expect(
            problems(list) == [
                "/etc/hookproxy/sources.yaml:7: sources.app.destinations: must be a list of destination names or {to: NAME, formatter: ..., options: ...}"
            ])
        let ordering = Self.minimal.replacingOccurrences(of: "token\"\n", with: "token\"\n    ordering: sideways\n")
        #expect(
            problems(ordering) == [
                "/etc/hookproxy/sources.yaml:5: destinations.chat.ordering: must be one of concurrent, fifo, not 'sideways'"
            ])
        let duration = "defaults:\n  timeout: soon\n" + Self.minimal
        #expect(
            problems(duration) == [
                "/etc/hookproxy/sources.yaml:2: defaults.timeout: must be a duration such as 500ms, 15s, 5m, 2h or 30d (at most 36500d), not 'soon'"
            ])
    }

    @Test("a source naming an unknown destination is an error with a suggestion")
    func unknownDestination() {
        let yaml = Self.minimal.replacingOccurrences(of: "destinations: [chat]", with: "destinations: [chta]")
        #expect(
            problems(yaml) == [
                "/etc/hookproxy/sources.yaml:7: sources.app.destinations[0]: unknown destination 'chta' (did you mean 'chat'?)"
            ])
    }

    @Test("an unset environment variable is an error naming it; defaults and files resolve")
    func environment() throws {
        let yaml = Self.minimal.replacingOccurrences(of: "\"https://discord.example/api/webhooks/1/token\"", with: "\"${DISCORD_URL}\"")
        #expect(
            problems(yaml) == [
                "/etc/hookproxy/sources.yaml:4: destinations.chat.url: environment variable DISCORD_URL is not set (write ${DISCORD_URL:-default} to give a default)"
            ])
        #expect(problems(yaml, environment: ["DISCORD_URL": "https://x.example/h"]).isEmpty)
        let secretFile = TestPaths.temporaryDirectory("secret") + "/url"
        try "https://from-file.example/h\n".write(toFile: secretFile, atomically: true, encoding: .utf8)
        let fromFile = Self.minimal.replacingOccurrences(
            of: "\"https://discord.example/api/webhooks/1/token\"", with: "\"${file:\(secretFile)}\"")
        let config = try ConfigLoader(environment: [:]).load(yaml: fromFile, file: "/x/sources.yaml")
        #expect(config.destinations["chat"]?.url == "https://from-file.example/h")
        let missingFile = Self.minimal.replacingOccurrences(
            of: "\"https://discord.example/api/webhooks/1/token\"", with: "\"${file:/nonexistent/x}\"")
        #expect(
            problems(missingFile) == ["/etc/hookproxy/sources.yaml:4: destinations.chat.url: secret file '/nonexistent/x' cannot be read"])
    }

    @Test("a bad URL is refused without echoing it (it may carry a token)")
    func badURLNotEchoed() {
        let yaml = Self.minimal.replacingOccurrences(
            of: "https://discord.example/api/webhooks/1/token", with: "discord.example/api/webhooks/1/token")
        let found = problems(yaml)
        #expect(found == ["/etc/hookproxy/sources.yaml:4: destinations.chat.url: must be an http:// or https:// URL with a host"])
        #expect(!found.joined().contains("token"))
    }

    @Test("invalid YAML is an error at the line of the syntax problem")
    func syntax() {
        let found = problems("sources:\n  app:\n    destinations: [chat\n  other: x\n")
        #expect(found.count == 1)
        #expect(found.first?.hasPrefix("/etc/hookproxy/sources.yaml:") == true)
        #expect(found.first?.contains("not valid YAML") == true)
    }

    @Test("every problem in a file is reported, not only the first")
    func everyProblem() {
        let yaml = """
            server:
              listen: nowhere
            destinations:
              chat:
                url: "https://x.example/h"
            sources:
              app:
                destinations: [chat, nope]
                mapping:
                  repo: { path: "repository.name" }
            """
        #expect(
            problems(yaml) == [
                "/etc/hookproxy/sources.yaml:2: server.listen: must be host:port, such as 0.0.0.0:8080, not 'nowhere'",
                "/etc/hookproxy/sources.yaml:4: destinations.chat: needs 'formatter' (the name of a formatter plugin, such as discord)",
                "/etc/hookproxy/sources.yaml:8: sources.app.destinations[1]: unknown destination 'nope'",
                "/etc/hookproxy/sources.yaml:10: sources.app.mapping.repo: 'repository.name' is neither a JSON path starting with '$' nor 'header:NAME'",
            ])
    }

    @Test("an unknown plugin, a plugin without the capability and rejected options are errors at the formatter's line")
    func pluginProblems() async throws {
        let yaml = """
            destinations:
              a:
                formatter: discrod
                url: "https://x.example/a"
              b:
                formatter: slack
                url: "https://x.example/b"
                options: { colour: red }
            sources:
              app:
                destinations:
                  - a
                  - to: b
                    formatter: generic
                    options: { mode: sideways }
            """
        let config = try ConfigLoader(environment: [:]).load(yaml: yaml, file: "/etc/hookproxy/sources.yaml")
        let host = PluginHost(config: config.plugins, catalog: await shippedPlugins(), journal: nil, metrics: nil, logger: testLogger)
        defer { host.shutdown() }
        guard case .failure(let error) = await PluginInstances.make(config: config, host: host) else {
            Issue.record("expected plugin problems")
            return
        }
        #expect(
            error.problems.map(\.description) == [
                "/etc/hookproxy/sources.yaml:3: destinations.a.formatter: no loaded plugin is named 'discrod' (did you mean 'discord'?); loaded formatters: discord, generic, slack",
                "/etc/hookproxy/sources.yaml:6: destinations.b.formatter: plugin 'slack' rejected its options: slack: unknown option 'colour' (did you mean 'color'?)",
                "/etc/hookproxy/sources.yaml:14: sources.app.destinations[1]: plugin 'generic' rejected its options: generic: option 'mode' must be one of raw, envelope, template, not 'sideways'",
            ])
    }
}

@Suite("Configuration: transport security")
struct TransportSecurityConfigTests {
    func problems(_ destination: String) -> [String] {
        let yaml = "destinations:\n  out: \(destination)\nsources:\n  app: { destinations: [out] }\n"
        do {
            _ = try ConfigLoader(environment: [:]).load(yaml: yaml, file: "/s.yaml")
            return []
        } catch {
            return error.problems.map(\.description)
        }
    }

    @Test("destination URLs must be https except to loopback, unless the destination sets allow_insecure")
    func httpsRule() {
        #expect(
            problems(#"{ formatter: generic, url: "http://hooks.example.com/in?token=abc" }"#) == [
                "/s.yaml:2: destinations.out.url: must be https:// (plain http is only allowed to loopback); set allow_insecure: true on destination 'out' to send in clear text anyway"
            ])
        #expect(problems(#"{ formatter: generic, url: "http://hooks.example.com/in", allow_insecure: true }"#).isEmpty)
        #expect(problems(#"{ formatter: generic, url: "https://hooks.example.com/in" }"#).isEmpty)
        for loopback in ["http://127.0.0.1:9000/in", "http://localhost/in", "http://[::1]:8080/in", "http://127.1.2.3/in"] {
            #expect(problems("{ formatter: generic, url: \"\(loopback)\" }").isEmpty, "\(loopback)")
        }
        // Only loopback IP literals and localhost: a name that starts like one resolves wherever its owner likes.
        for outside in [
            "http://127.attacker.example/in", "http://127.0.0.1.nip.io/in", "http://localhost.attacker.example/in", "http://127.1/in",
            "http://[::2]/in", "http://128.0.0.1/in",
        ] {
            #expect(problems("{ formatter: generic, url: \"\(outside)\" }").count == 1, "\(outside) passed for loopback")
        }
    }

    @Test(
        "a header value that would break requests is a configuration error naming the header, never the value; a secret file's one trailing newline is dropped"
    )
    func headerValues() async throws {
        let directory = TestPaths.temporaryDirectory("header-values")
        try "token-one\n".write(toFile: directory + "/one", atomically: true, encoding: .utf8)
        try "token-two\r\n".write(toFile: directory + "/two", atomically: true, encoding: .utf8)
        try "token-three\n\n".write(toFile: directory + "/three", atomically: true, encoding: .utf8)
        func yaml(_ file: String) -> String {
            testServerSection()
                + "destinations:\n  out:\n    formatter: generic\n    url: \"http://127.0.0.1:9/in\"\n    headers: { X-Token: \"${file:\(directory)/\(file)}\" }\n"
                + "sources:\n  app: { destinations: [out] }\n"
        }
        for (file, value) in [("one", "token-one"), ("two", "token-two")] {
            let config = try ConfigLoader(environment: [:]).load(yaml: yaml(file), file: directory + "/sources.yaml")
            #expect(config.destinations["out"]?.headers.first?.value == value, "\(file)")
        }
        try yaml("three").write(toFile: directory + "/sources.yaml", atomically: true, encoding: .utf8)
        let check = try await shell("'\(PluginLoader.executableDirectory)/hookproxy' check --config '\(directory)/sources.yaml' 2>&1")
        #expect(check.status == 2)
        #expect(
            check.output.contains(
                "destinations.out.headers.X-Token: the value has a control character or leading or trailing whitespace (a secret file ending in two newlines?); it is not shown"
            ), "\(check.output)")
        #expect(!check.output.contains("token-three"), "the value was echoed: \(check.output)")
        for broken in ["\"a\\u0000b\"", "\" padded \"", "\"a\\u007fb\""] {
            let text =
                testServerSection()
                + "destinations:\n  out: { formatter: generic, url: \"http://127.0.0.1:9/in\", headers: { X-Bad: \(broken) } }\nsources:\n  app: { destinations: [out] }\n"
            #expect(throws: ConfigError.self, "\(broken)") { try ConfigLoader(environment: [:]).load(yaml: text, file: "/s.yaml") }
        }
        let badName =
            testServerSection()
            + "destinations:\n  out: { formatter: generic, url: \"http://127.0.0.1:9/in\", headers: { \"X Bad\": v } }\nsources:\n  app: { destinations: [out] }\n"
        #expect(throws: ConfigError.self) { try ConfigLoader(environment: [:]).load(yaml: badName, file: "/s.yaml") }
    }

    @Test("hookproxy check refuses a plain-http destination whose host only looks like loopback")
    func lookalikeLoopbackRefusedByCheck() async throws {
        let directory = TestPaths.temporaryDirectory("lookalike")
        try
            (testServerSection()
            + "destinations:\n  out: { formatter: generic, url: \"http://127.attacker.example/in\" }\nsources:\n  app: { destinations: [out] }\n")
            .write(toFile: directory + "/sources.yaml", atomically: true, encoding: .utf8)
        let check = try await shell("'\(PluginLoader.executableDirectory)/hookproxy' check --config '\(directory)/sources.yaml' 2>&1")
        #expect(check.status == 2, "\(check.output)")
        #expect(check.output.contains("destinations.out.url: must be https:// (plain http is only allowed to loopback)"), "\(check.output)")
    }
}

@Suite("Admin protection")
struct AdminTokenTests {
    @Test("with admin_token set, every admin route but /healthz needs the bearer token")
    func adminToken() async throws {
        let yaml =
            testServerSection().replacingOccurrences(
                of: "  admin_listen: \"127.0.0.1:0\"", with: "  admin_listen: \"127.0.0.1:0\"\n  admin_token: \"${TOKEN}\"") + """
                destinations:
                  out: { formatter: generic, url: "http://127.0.0.1:9/in" }
                sources:
                  app: { destinations: [out] }
                """
        let server = try await TestServer.start(yaml: yaml, environment: ["TOKEN": "s3cret-token"])
        #expect(try await send(.GET, "\(server.adminURL)/healthz").status == 200)
        for path in ["/readyz", "/admin/destinations", "/admin/events/x"] {
            let none = try await send(.GET, "\(server.adminURL)\(path)")
            #expect(none.status == 401, "\(path) without a token")
            #expect(none.header("WWW-Authenticate") == "Bearer")
            let wrong = try await send(.GET, "\(server.adminURL)\(path)", headers: [("Authorization", "Bearer s3cret-tokeN")])
            #expect(wrong.status == 401, "\(path) with a wrong token")
            #expect(!String(decoding: wrong.body, as: UTF8.self).contains("s3cret"))
        }
        let replay = try await adminPost("\(server.adminURL)/admin/events/x/replay")
        #expect(replay.status == 401)
        let ready = try await send(.GET, "\(server.adminURL)/readyz", headers: [("Authorization", "Bearer s3cret-token")])
        #expect(ready.status == 200)
        let missing = try await send(.GET, "\(server.adminURL)/admin/events/x", headers: [("Authorization", "Bearer s3cret-token")])
        #expect(missing.status == 404)
        try await server.stop()
    }
}

extension AdminTokenTests {
    @Test("a web page cannot drive the admin API: a rebound Host is 421, a cross-origin or non-JSON POST 403 or 415, and nothing changes")
    func webPages() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let yaml =
            testServerSection() + """
                destinations:
                  out: { formatter: generic, url: "\(sink.url)/in" }
                sources:
                  app: { destinations: [out] }
                """
        let server = try await TestServer.start(yaml: yaml)
        let posted = try await server.post("app", json: #"{"n":1}"#)
        let id = try #require(posted.json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id)
        let port = server.adminURL.split(separator: ":").last.map(String.init) ?? ""

        // DNS rebinding: the page's own name, pointed at 127.0.0.1, is in the Host header.
        for path in ["/healthz", "/admin/events", "/admin/config"] {
            let rebound = try await send(.GET, server.adminURL + path, headers: [("Host", "rebound.example:\(port)")])
            #expect(rebound.status == 421, "\(path)")
            #expect(rebound.json?["error"] == "misdirected_request")
            #expect(rebound.json?["detail"]?.stringValue?.contains("server.admin_hosts") == true)
        }
        for host in ["127.0.0.1:\(port)", "localhost:\(port)", "LOCALHOST", "localhost.:\(port)"] {
            #expect(try await send(.GET, server.adminURL + "/admin/events", headers: [("Host", host)]).status == 200, "\(host)")
        }
        for host in ["127.0.0.2:\(port)", "127.0.0.1.rebound.example", "localhost:x", "[::1"] {
            #expect(try await send(.GET, server.adminURL + "/admin/events", headers: [("Host", host)]).status == 421, "\(host)")
        }
        let twoHosts = try RawClient(port: Int(port) ?? 0)
        _ = await twoHosts.send("GET /admin/events HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: rebound.example\r\n\r\n")
        let answer = await twoHosts.readAll(timeout: .seconds(2))
        twoHosts.close()
        #expect(answer.hasPrefix("HTTP/1.1 421"), "\(answer.prefix(80))")

        // A form post from another page: no CORS preflight is needed for text/plain or a form, so the server refuses it.
        let replay = server.adminURL + "/admin/replay"
        let filter = Array(#"{"source":"app"}"#.utf8)
        for type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx"] {
            let refused = try await send(.POST, replay, body: filter, headers: [("Content-Type", type)])
            #expect(refused.status == 415, "\(type)")
            #expect(refused.json?["error"] == "unsupported_media_type")
        }
        #expect(try await send(.POST, replay, body: filter).status == 415)
        #expect(try await send(.POST, server.adminURL + "/admin/reload").status == 415)
        let crossOrigin: [[(String, String)]] = [
            [("Origin", "https://page.example")], [("Origin", "null")], [("Origin", "http://127.0.0.1:1")],
            [("Sec-Fetch-Site", "cross-site")], [("Sec-Fetch-Site", "same-site")],
        ]
        for headers in crossOrigin {
            let refused = try await adminPost(replay, body: filter, headers: headers)
            #expect(refused.status == 403, "\(headers)")
            #expect(refused.json?["error"] == "cross_origin")
        }
        // Nothing was replayed by any of those.
        #expect(sink.requests().count == 1)

        // The operator's own requests: curl or the CLI (no Origin), or the same origin.
        let sameOrigin = try await adminPost(
            replay, body: filter,
            headers: [("Origin", "http://127.0.0.1:\(port)"), ("Sec-Fetch-Site", "same-origin")])
        #expect(sameOrigin.status == 202, "\(String(decoding: sameOrigin.body, as: UTF8.self))")
        try await waitUntil("the replay delivered") { sink.requests().count == 2 }
        // Once that delivery is recorded as finished, a replay with a JSON type written differently schedules it again.
        try await waitUntil("a second replay scheduled") {
            let again = try await send(.POST, replay, body: filter, headers: [("Content-Type", "Application/JSON; charset=utf-8")])
            #expect(again.status == 202)
            return again.json?["scheduled"] == 1
        }
        try await waitUntil("the second replay delivered") { sink.requests().count == 3 }

        // admin_hosts adds a name, at reload.
        let file = server.directory + "/sources.yaml"
        let named = try String(contentsOfFile: file, encoding: .utf8).replacingOccurrences(
            of: "  admin_listen:", with: "  admin_hosts: [hookproxy-admin.internal]\n  admin_listen:")
        try named.write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try await adminPost(server.adminURL + "/admin/reload").status == 200)
        let byName = try await send(.GET, server.adminURL + "/admin/events", headers: [("Host", "Hookproxy-Admin.internal:\(port)")])
        #expect(byName.status == 200)
        try await server.stop()
        try await sink.stop()
    }

    @Test("an admin token that expands to nothing, or a non-loopback admin listener without a token, is a configuration error")
    func tokenRequired() throws {
        func problems(_ server: String, _ environment: [String: String] = [:]) -> [String] {
            let yaml = "server:\n" + server + "\n" + ConfigTests.minimal
            do {
                _ = try ConfigLoader(environment: environment).load(yaml: yaml, file: "/etc/hookproxy/sources.yaml")
                return []
            } catch {
                return error.problems.map(\.description)
            }
        }
        let empty = problems(#"  admin_token: "${ADMIN_TOKEN}""#, ["ADMIN_TOKEN": ""])
        #expect(
            empty == [
                "/etc/hookproxy/sources.yaml:2: server.admin_token: '${ADMIN_TOKEN}' expands to nothing, which would leave the admin API "
                    + "without a token; set the variable, or write admin_token: \"\" to run without one"
            ], "\(empty)")
        #expect(problems(#"  admin_token: "${ADMIN_TOKEN:-}""#).count == 1)
        #expect(problems(#"  admin_token: "${ADMIN_TOKEN:-}""#, ["ADMIN_TOKEN": "t0k"]).isEmpty)
        #expect(problems(#"  admin_token: """#).isEmpty)
        #expect(problems(#"  admin_token: "${ADMIN_TOKEN}""#, ["ADMIN_TOKEN": "two words"]).count == 1)

        let open = problems(#"  admin_listen: "0.0.0.0:9090""#)
        #expect(open.count == 1)
        #expect(open.first?.hasPrefix("/etc/hookproxy/sources.yaml:2: server.admin_listen: is not a loopback address") == true, "\(open)")
        #expect(problems(#"  admin_listen: "[::]:9090""#).count == 1)
        #expect(problems(#"  admin_listen: "admin.internal:9090""#).count == 1)
        #expect(problems("  admin_listen: \"0.0.0.0:9090\"\n  admin_insecure: true").isEmpty)
        #expect(problems("  admin_listen: \"0.0.0.0:9090\"\n  admin_token: t0k").isEmpty)
        #expect(problems(#"  admin_listen: "[::1]:9090""#).isEmpty)
        #expect(problems(#"  admin_listen: "localhost:9090""#).isEmpty)
        #expect(problems("  admin_hosts: [\"https://x.example\"]").count == 1)
        #expect(problems("  admin_hosts: [x.example, 10.0.0.5]").isEmpty)
    }
}

@Suite("Secrets stay secret")
struct SecretRedactionTests {
    @Test("hookproxy check reports problems without echoing any secret value")
    func checkOutput() async throws {
        let directory = TestPaths.temporaryDirectory("secrets")
        let yaml = """
            server: { admin_token: "admin-TOKEN-value" }
            destinations:
              chat: { formatter: discord, url: "htp://discord.example/api/webhooks/1/TOKEN-IN-URL" }
              signed: { formatter: generic, url: "https://x.example/in", signing_secret: "not-whsec-SIGNING-value" }
            sources:
              app:
                verify: { preset: standard-webhooks, secret: "VERIFY-secret-value" }
                destinations: [signed]
            """
        try yaml.write(toFile: directory + "/sources.yaml", atomically: true, encoding: .utf8)
        let result = try await shell("'\(PluginLoader.executableDirectory)/hookproxy' check --config '\(directory)/sources.yaml'")
        #expect(result.status == 2)
        #expect(result.output.contains("destinations.chat.url: must be an http:// or https:// URL with a host"))
        #expect(result.output.contains("destinations.signed.signing_secret: must be 'whsec_' followed by base64"))
        #expect(result.output.contains("sources.app.verify.secret: must be 'whsec_' followed by base64"))
        for secret in ["admin-TOKEN-value", "TOKEN-IN-URL", "SIGNING-value", "VERIFY-secret-value"] {
            #expect(!result.output.contains(secret), "check printed \(secret)")
        }
    }
}
