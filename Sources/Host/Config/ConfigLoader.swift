import Foundation
import PluginKit
import Yams

/// Reads `sources.yaml` into a ``HookproxyConfig``: every key checked, every problem reported with file, line and key.
///
/// Relative paths in the file (the SQLite database, the plugins directory) are relative to the file's own directory,
/// so a configuration means the same thing whatever directory hookproxy is started from.
struct ConfigLoader: Sendable {
    var environment: [String: String] = ProcessInfo.processInfo.environment

    /// Loads and validates the file at `path`.
    func load(file path: String) throws(ConfigError) -> HookproxyConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError([ConfigProblem(file: path, line: nil, key: "", message: "cannot read the configuration file")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError([ConfigProblem(file: path, line: nil, key: "", message: "the file is not valid UTF-8")])
        }
        return try load(yaml: text, file: path)
    }

    /// Loads and validates YAML text; `file` names it in messages and anchors relative paths.
    func load(yaml: String, file: String) throws(ConfigError) -> HookproxyConfig {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            throw ConfigError([Self.syntaxProblem(error, file: file)])
        } catch {
            throw ConfigError([ConfigProblem(file: file, line: nil, key: "", message: "not valid YAML: \(error)")])
        }
        guard let root else {
            throw ConfigError([ConfigProblem(file: file, line: nil, key: "", message: "the file is empty")])
        }
        let reader = ConfigReader(file: file, substitution: EnvironmentSubstitution(environment: environment))
        let baseDirectory = URL(fileURLWithPath: file).deletingLastPathComponent().path
        let config = Self.read(root, reader: reader, baseDirectory: baseDirectory)
        guard let config, reader.problems.isEmpty else {
            throw ConfigError(
                reader.problems.isEmpty ? [ConfigProblem(file: file, line: nil, key: "", message: "must be a mapping")] : reader.problems)
        }
        return config
    }

    private static func syntaxProblem(_ error: YamlError, file: String) -> ConfigProblem {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _):
            return ConfigProblem(file: file, line: mark.line, key: "", message: "not valid YAML: \(problem)")
        default:
            return ConfigProblem(file: file, line: nil, key: "", message: "not valid YAML: \(error)")
        }
    }

    static func resolvePath(_ path: String, base: String) -> String {
        path.hasPrefix("/") ? path : URL(fileURLWithPath: base).appendingPathComponent(path).standardizedFileURL.path
    }

    // MARK: Sections

    private static func read(_ root: Node, reader: ConfigReader, baseDirectory: String) -> HookproxyConfig? {
        guard
            let sections = reader.entries(
                root, "", allowed: ["server", "storage", "plugins", "defaults", "destinations", "sources", "alerts"])
        else { return nil }
        var server = ServerConfig()
        var storage = StorageConfig(backend: .sqlite(path: resolvePath("data/hookproxy.sqlite", base: baseDirectory)))
        storage.baseDirectory = baseDirectory
        var plugins = PluginsConfig(directory: resolvePath("plugins", base: baseDirectory))
        var defaults = DeliveryDefaults()
        var destinationsNode: (Node, Node)?
        var sourcesNode: (Node, Node)?
        var alertsNode: (Node, Node)?
        for (name, keyNode, value) in sections {
            switch name {
            case "server": readServer(value, into: &server, reader: reader)
            case "storage": readStorage(value, into: &storage, reader: reader, baseDirectory: baseDirectory)
            case "plugins": readPlugins(value, into: &plugins, reader: reader, baseDirectory: baseDirectory)
            case "defaults": readDefaults(value, into: &defaults, reader: reader)
            case "destinations": destinationsNode = (keyNode, value)
            case "sources": sourcesNode = (keyNode, value)
            case "alerts": alertsNode = (keyNode, value)
            default: break
            }
        }
        var destinations: [String: DestinationConfig] = [:]
        // Every destination name defined, valid or not: a route to an invalid one was already reported with it.
        var definedDestinations = Set<String>()
        if let (_, node) = destinationsNode {
            for (name, keyNode, value) in reader.entries(node, "destinations") ?? [] {
                definedDestinations.insert(name)
                if let destination = readDestination(name, keyNode, value, defaults: defaults, reader: reader) {
                    destinations[name] = destination
                }
            }
        }
        var sources: [String: SourceConfig] = [:]
        if let (keyNode, node) = sourcesNode {
            for (name, sourceKey, value) in reader.entries(node, "sources") ?? [] {
                if let source = readSource(
                    name, sourceKey, value, destinations: destinations, definedDestinations: definedDestinations,
                    redactHeaders: defaults.redactHeaders, reader: reader)
                {
                    sources[name] = source
                }
            }
            if sources.isEmpty, reader.problems.isEmpty { reader.problem(keyNode, "sources", "no source is defined") }
        } else {
            reader.problem(root, "sources", "is missing: define at least one source")
        }
        let alerts = alertsNode.flatMap { readAlerts($0.0, $0.1, definedDestinations: definedDestinations, reader: reader) }
        return HookproxyConfig(
            file: reader.file, server: server, storage: storage, plugins: plugins, destinations: destinations,
            sources: sources, alerts: alerts)
    }

    private static func readAlerts(_ keyNode: Node, _ node: Node, definedDestinations: Set<String>, reader: ConfigReader)
        -> AlertsConfig?
    {
        var destination: String?
        var kinds = Set(AlertsConfig.Kind.allCases)
        var rateLimit: RateLimit?
        var named = false
        for (key, _, value) in reader.entries(node, "alerts", allowed: ["destination", "on", "rate_limit"]) ?? [] {
            let path = "alerts.\(key)"
            switch key {
            case "destination":
                named = true
                guard let name = reader.string(value, path) else { continue }
                if definedDestinations.contains(name) {
                    destination = name
                } else {
                    let hint = PluginOptions.closest(to: name, in: definedDestinations).map { " (did you mean '\($0)'?)" } ?? ""
                    reader.problem(value, path, "no destination named '\(name)'\(hint)")
                }
            case "on":
                guard case .sequence(let sequence) = value else {
                    reader.problem(value, path, "must be a list of: \(AlertsConfig.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
                    continue
                }
                kinds = Set(sequence.enumerated().compactMap { reader.choice($1, "\(path)[\($0)]", as: AlertsConfig.Kind.self) })
            case "rate_limit": rateLimit = readRateLimit(value, path, reader: reader)
            default: break
            }
        }
        guard let destination else {
            if !named { reader.problem(keyNode, "alerts.destination", "is missing: name the destination alerts go to") }
            return nil
        }
        var alerts = AlertsConfig(destination: destination, kinds: kinds, location: reader.location(keyNode, "alerts"))
        if let rateLimit { alerts.rateLimit = rateLimit }
        return alerts
    }

    private static func readListen(_ node: Node, _ key: String, reader: ConfigReader) -> ListenAddress? {
        guard let text = reader.string(node, key) else { return nil }
        let host: Substring
        let portText: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(after: close)...].drop { $0 == ":" }
        } else if let colon = text.lastIndex(of: ":") {
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        } else {
            reader.problem(node, key, "must be host:port, such as 0.0.0.0:8080, not '\(text)'")
            return nil
        }
        guard let port = Int(portText), (0...65535).contains(port), !host.isEmpty else {
            reader.problem(node, key, "must be host:port with a port from 0 to 65535, not '\(text)'")
            return nil
        }
        return ListenAddress(host: String(host), port: port)
    }

    private static func readServer(_ node: Node, into server: inout ServerConfig, reader: ConfigReader) {
        let allowed = [
            "listen", "admin_listen", "admin_token", "admin_hosts", "admin_insecure", "max_body_bytes", "shutdown_grace", "max_headers",
            "max_header_bytes", "read_timeout", "max_concurrent_requests", "max_concurrent_per_client", "first_byte_timeout",
            "rate_limit_unverified", "trusted_proxies",
        ]
        var adminListenNode: Node?
        var firstByteNode: Node?
        for (key, _, value) in reader.entries(node, "server", allowed: allowed) ?? [] {
            let path = "server.\(key)"
            switch key {
            case "listen": readListen(value, path, reader: reader).map { server.listen = $0 }
            case "admin_listen":
                adminListenNode = value
                readListen(value, path, reader: reader).map { server.adminListen = $0 }
            case "admin_token": server.adminToken = readAdminToken(value, path, reader: reader)
            case "admin_hosts": server.adminHosts = readHostNames(value, path, reader: reader)
            case "admin_insecure": reader.bool(value, path).map { server.adminInsecure = $0 }
            case "max_body_bytes": reader.integer(value, path, range: 1...1_073_741_824).map { server.maxBodyBytes = $0 }
            case "shutdown_grace": reader.duration(value, path).map { server.shutdownGrace = $0 }
            case "max_headers": reader.integer(value, path, range: 8...10_000).map { server.maxHeaders = $0 }
            case "max_header_bytes": reader.integer(value, path, range: 1024...1_048_576).map { server.maxHeaderBytes = $0 }
            case "read_timeout": reader.duration(value, path).map { server.readTimeout = $0 }
            case "max_concurrent_requests": reader.integer(value, path, range: 1...1_000_000).map { server.maxConcurrentRequests = $0 }
            case "max_concurrent_per_client":
                reader.integer(value, path, range: 1...1_000_000).map { server.maxConcurrentPerClient = $0 }
            case "first_byte_timeout":
                firstByteNode = value
                reader.duration(value, path).map { server.firstByteTimeout = $0 }
            case "rate_limit_unverified": readRateLimit(value, path, reader: reader).map { server.rateLimitUnverified = $0 }
            case "trusted_proxies": server.trustedProxies = readNetworks(value, path, reader: reader)
            default: break
            }
        }
        if let firstByteNode, server.firstByteTimeout > server.readTimeout || server.firstByteTimeout <= .zero {
            reader.problem(
                firstByteNode, "server.first_byte_timeout",
                "must be more than 0 and at most server.read_timeout (\(server.readTimeout.compactDescription))")
        }
        if let adminListenNode, !isLoopback(server.adminListen.host), server.adminToken == nil, !server.adminInsecure {
            reader.problem(
                adminListenNode, "server.admin_listen",
                "is not a loopback address and server.admin_token is not set: anyone who reaches \(server.adminListen) could replay "
                    + "events and read the configuration; set admin_token, or admin_insecure: true when a firewall or proxy guards it")
        }
    }

    /// `server.admin_token`. A value that expands to nothing (an empty or unset variable behind `${...:-}`) is a
    /// problem, so that a missing secret never opens the admin API; `""` written as such means no token.
    private static func readAdminToken(_ node: Node, _ key: String, reader: ConfigReader) -> String? {
        guard let token = reader.string(node, key) else { return nil }
        if token.isEmpty {
            if let written = node.scalar?.string, !written.isEmpty {
                reader.problem(
                    node, key,
                    "'\(written)' expands to nothing, which would leave the admin API without a token; set the variable, or "
                        + "write admin_token: \"\" to run without one")
            }
            return nil
        }
        guard token.unicodeScalars.allSatisfy({ (0x21...0x7E).contains($0.value) }) else {
            reader.problem(node, key, "must be visible ASCII with no spaces or control characters (it is sent in a header)")
            return nil
        }
        return token
    }

    /// `server.trusted_proxies`: addresses and networks (`10.0.0.0/8`, `fd00::/8`).
    private static func readNetworks(_ node: Node, _ key: String, reader: ConfigReader) -> [IPNetwork] {
        guard case .sequence(let items) = node else {
            reader.problem(node, key, "must be a list of addresses or networks, such as [10.0.0.0/8, 192.0.2.7]")
            return []
        }
        return items.enumerated().compactMap { index, item in
            guard let text = reader.string(item, "\(key)[\(index)]") else { return nil }
            guard let network = IPNetwork(text) else {
                reader.problem(item, "\(key)[\(index)]", "must be an IP address or network such as 10.0.0.0/8, not '\(text)'")
                return nil
            }
            return network
        }
    }

    /// `server.admin_hosts`: host names (no scheme, no port), lowercased.
    private static func readHostNames(_ node: Node, _ key: String, reader: ConfigReader) -> [String] {
        guard case .sequence(let items) = node else {
            reader.problem(node, key, "must be a list of host names, such as [hookproxy-admin.internal]")
            return []
        }
        var names: [String] = []
        for (index, item) in items.enumerated() {
            guard let name = reader.string(item, "\(key)[\(index)]") else { continue }
            let valid =
                !name.isEmpty && name.count <= 253
                && name.unicodeScalars.allSatisfy {
                    $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-.".unicodeScalars.contains($0))
                }
            guard valid || AdminHost.isIPLiteral(name) else {
                reader.problem(
                    item, "\(key)[\(index)]",
                    "must be a host name or IP address without scheme or port, such as hookproxy-admin.internal, not '\(name)'")
                continue
            }
            names.append(name.lowercased())
        }
        return names
    }

    private static func readStorage(_ node: Node, into storage: inout StorageConfig, reader: ConfigReader, baseDirectory: String) {
        var instanceTimeoutNode: Node?
        var maximumSizeNode: Node?
        var maximumConnectionsNode: Node?
        defer {
            if let node = maximumConnectionsNode, case .sqlite = storage.backend {
                reader.problem(
                    node, "storage.max_connections", "applies to a postgres:// storage.url only (SQLite has one writer and no pool)")
            }
            if let node = instanceTimeoutNode, case .sqlite = storage.backend {
                reader.problem(
                    node, "storage.instance_timeout", "applies to a postgres:// storage.url only (one process owns an SQLite file)")
            }
            if let node = maximumSizeNode, case .postgres = storage.backend {
                reader.problem(
                    node, "storage.max_size",
                    "applies to an sqlite: storage.url only (size a PostgreSQL database with its own quotas and retention)")
            }
        }
        let allowed = ["url", "retention", "max_size", "instance_timeout", "max_connections", "journal"]
        for (key, _, value) in reader.entries(node, "storage", allowed: allowed) ?? [] {
            let path = "storage.\(key)"
            switch key {
            case "url":
                guard let url = reader.string(value, path) else { continue }
                if url.hasPrefix("sqlite:") {
                    var file = String(url.dropFirst("sqlite:".count))
                    if file.hasPrefix("//") { file = String(file.dropFirst(2)) }
                    guard !file.isEmpty else {
                        reader.problem(value, path, "needs a file after 'sqlite:', such as sqlite:data/hookproxy.sqlite")
                        continue
                    }
                    storage.backend = .sqlite(path: resolvePath(file, base: baseDirectory))
                } else if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
                    do {
                        _ = try PostgresURL(url)
                        storage.backend = .postgres(url: url)
                    } catch {
                        reader.problem(value, path, "\(error)")
                    }
                } else {
                    reader.problem(
                        value, path,
                        "must start with sqlite: or postgres:// (for example sqlite:data/hookproxy.sqlite or postgres://hookproxy@db.internal/hookproxy)"
                    )
                }
            case "retention":
                reader.duration(value, path).map { storage.retention = $0 }
            case "journal":
                guard let file = reader.string(value, path), !file.isEmpty else { continue }
                storage.journal = resolvePath(file, base: baseDirectory)
            case "max_size":
                maximumSizeNode = value
                guard let text = reader.string(value, path) else { continue }
                guard let bytes = Self.parseSize(text), bytes >= 65_536 else {
                    reader.problem(value, path, "must be a size of at least 64KB, such as 512MB or 20GB, not '\(text)'")
                    continue
                }
                storage.maximumSize = bytes
            case "instance_timeout":
                instanceTimeoutNode = value
                guard let timeout = reader.duration(value, path) else { continue }
                guard timeout >= .seconds(3) else {
                    reader.problem(value, path, "must be at least 3s (instances record that they are alive every third of it)")
                    continue
                }
                storage.instanceTimeout = timeout
            case "max_connections":
                maximumConnectionsNode = value
                // One connection is held for LISTEN; the others serve ingest, claims and the admin API.
                reader.integer(value, path, range: 2...1_000).map { storage.maximumConnections = $0 }
            default: break
            }
        }
    }

    /// The largest size `parseSize` accepts: a petabyte.
    static let maximumSize = 1 << 50

    private static func readPlugins(_ node: Node, into plugins: inout PluginsConfig, reader: ConfigReader, baseDirectory: String) {
        let settingKeys = ["isolation", "call_timeout", "memory_limit", "workers"]
        for (key, _, value) in reader.entries(node, "plugins", allowed: ["directory", "overrides"] + settingKeys) ?? [] {
            let path = "plugins.\(key)"
            switch key {
            case "directory":
                if let directory = reader.string(value, path) { plugins.directory = resolvePath(directory, base: baseDirectory) }
            case "overrides":
                for (name, nameNode, entry) in reader.entries(value, path) ?? [] {
                    let entryPath = "\(path).\(name)"
                    var override = PluginOverride(location: reader.location(nameNode, entryPath))
                    for (field, _, fieldValue) in reader.entries(entry, entryPath, allowed: settingKeys) ?? [] {
                        readPluginSetting(field, fieldValue, "\(entryPath).\(field)", reader: reader) { setting in
                            switch setting {
                            case .isolation(let isolation): override.isolation = isolation
                            case .callTimeout(let timeout): override.callTimeout = timeout
                            case .memoryLimit(let limit): override.memoryLimit = limit
                            case .workers(let workers): override.workers = workers
                            }
                        }
                    }
                    plugins.overrides[name] = override
                }
            default:
                readPluginSetting(key, value, path, reader: reader) { setting in
                    switch setting {
                    case .isolation(let isolation): plugins.defaults.isolation = isolation
                    case .callTimeout(let timeout): plugins.defaults.callTimeout = timeout
                    case .memoryLimit(let limit): plugins.defaults.memoryLimit = limit
                    case .workers(let workers): plugins.defaults.workers = workers
                    }
                }
            }
        }
    }

    private enum PluginSetting {
        case isolation(PluginIsolation)
        case callTimeout(Duration)
        case memoryLimit(Int)
        case workers(Int)
    }

    /// One of `isolation`, `call_timeout`, `memory_limit`, `workers` (in `plugins` or an override).
    private static func readPluginSetting(
        _ key: String, _ node: Node, _ path: String, reader: ConfigReader, apply: (PluginSetting) -> Void
    ) {
        switch key {
        case "isolation": reader.choice(node, path, as: PluginIsolation.self).map { apply(.isolation($0)) }
        case "call_timeout":
            guard let timeout = reader.duration(node, path) else { return }
            guard timeout >= .milliseconds(10), timeout <= .seconds(3600) else {
                reader.problem(node, path, "must be from 10ms to 1h")
                return
            }
            apply(.callTimeout(timeout))
        case "memory_limit":
            guard let text = reader.string(node, path) else { return }
            guard let bytes = parseSize(text), bytes >= 64 << 20 else {
                reader.problem(node, path, "must be a size of at least 64MB, such as 256MB or 1GB, not '\(text)'")
                return
            }
            apply(.memoryLimit(bytes))
        case "workers": reader.integer(node, path, range: 1...64).map { apply(.workers($0)) }
        default: break
        }
    }

    /// `123`, `64KB`, `512MB`, `20GB` (binary multiples) as bytes; nil for anything else, or beyond ``maximumSize``.
    static func parseSize(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).uppercased()
        let units = [
            ("KIB", 1 << 10), ("MIB", 1 << 20), ("GIB", 1 << 30), ("TIB", 1 << 40),
            ("KB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("TB", 1 << 40), ("B", 1),
        ]
        for (suffix, scale) in units
        where trimmed.hasSuffix(suffix) {
            // Refuses NaN, infinities and sizes beyond a petabyte before converting (a conversion that cannot trap).
            guard let value = Double(trimmed.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), value > 0,
                value * Double(scale) <= Double(maximumSize)
            else { return nil }
            return Int(finite: value * Double(scale))
        }
        return Int(trimmed).flatMap { $0 <= maximumSize ? $0 : nil }
    }

    /// The `defaults` section: what destinations inherit.
    struct DeliveryDefaults {
        var timeout: Duration = .seconds(15)
        var retry = RetryPolicy()
        var maxConcurrency = 8
        var circuitBreaker = CircuitBreakerPolicy()
        var maxRetryAfter = DestinationConfig.defaultMaxRetryAfter
        var maxCrashes = DestinationConfig.defaultMaxCrashes
        /// Headers every source stores redacted, beyond the built-in credential names (lowercase).
        var redactHeaders: Set<String> = []
    }

    private static func readDefaults(_ node: Node, into defaults: inout DeliveryDefaults, reader: ConfigReader) {
        let allowed = ["timeout", "retry", "max_concurrency", "circuit_breaker", "max_retry_after", "max_crashes", "redact_headers"]
        for (key, _, value) in reader.entries(node, "defaults", allowed: allowed) ?? [] {
            switch key {
            case "timeout": reader.duration(value, "defaults.timeout").map { defaults.timeout = $0 }
            case "retry": defaults.retry = readRetry(value, "defaults.retry", base: defaults.retry, reader: reader)
            case "max_concurrency": reader.integer(value, "defaults.max_concurrency", range: 1...1024).map { defaults.maxConcurrency = $0 }
            case "max_retry_after": readMaxRetryAfter(value, "defaults.max_retry_after", reader: reader).map { defaults.maxRetryAfter = $0 }
            case "max_crashes": reader.integer(value, "defaults.max_crashes", range: 1...100).map { defaults.maxCrashes = $0 }
            case "redact_headers": defaults.redactHeaders = readHeaderNames(value, "defaults.redact_headers", reader: reader)
            case "circuit_breaker":
                defaults.circuitBreaker = readCircuitBreaker(
                    value, "defaults.circuit_breaker", base: defaults.circuitBreaker, reader: reader)
            default: break
            }
        }
    }

    private static func readRetry(_ node: Node, _ key: String, base: RetryPolicy, reader: ConfigReader) -> RetryPolicy {
        var policy = base
        let entries = reader.entries(node, key, allowed: ["schedule", "exponential", "jitter", "max_age", "retryable_statuses"]) ?? []
        if entries.contains(where: { $0.0 == "schedule" }), entries.contains(where: { $0.0 == "exponential" }) {
            reader.problem(node, key, "give either 'schedule' or 'exponential', not both")
        }
        for (name, _, value) in entries {
            let path = "\(key).\(name)"
            switch name {
            case "schedule":
                guard case .sequence(let items) = value, !items.isEmpty else {
                    reader.problem(value, path, "must be a list of durations, such as [5s, 1m, 5m]")
                    continue
                }
                let delays = items.enumerated().compactMap { reader.duration($1, "\(path)[\($0)]") }
                if delays.count == items.count { policy.backoff = .schedule(delays) }
            case "exponential":
                var initial = Duration.seconds(1)
                var multiplier = 2.0
                var maximum = Duration.seconds(3600)
                var attempts = 10
                for (field, _, fieldValue) in reader.entries(value, path, allowed: ["initial", "multiplier", "max", "attempts"]) ?? [] {
                    let fieldPath = "\(path).\(field)"
                    switch field {
                    case "initial": reader.duration(fieldValue, fieldPath).map { initial = $0 }
                    case "multiplier": reader.number(fieldValue, fieldPath, range: 1...100).map { multiplier = $0 }
                    case "max": reader.duration(fieldValue, fieldPath).map { maximum = $0 }
                    case "attempts": reader.integer(fieldValue, fieldPath, range: 1...1000).map { attempts = $0 }
                    default: break
                    }
                }
                policy.backoff = .exponential(initial: initial, multiplier: multiplier, maximum: maximum, attempts: attempts)
            case "jitter":
                reader.number(value, path, range: 0...1).map { policy.jitter = $0 }
            case "max_age":
                reader.duration(value, path).map { policy.maximumAge = $0 }
            case "retryable_statuses":
                guard case .sequence(let items) = value else {
                    reader.problem(value, path, "must be a list of 4xx statuses, such as [408, 409, 425, 429]")
                    continue
                }
                let statuses = items.enumerated().compactMap { reader.integer($1, "\(path)[\($0)]", range: 400...499) }
                if statuses.count == items.count { policy.retryableStatuses = Set(statuses) }
            default: break
            }
        }
        return policy
    }

    private static func readCircuitBreaker(
        _ node: Node, _ key: String, base: CircuitBreakerPolicy, reader: ConfigReader
    ) -> CircuitBreakerPolicy {
        var policy = base
        if case .scalar = node {
            if let enabled = reader.bool(node, key) { policy.enabled = enabled }
            return policy
        }
        for (name, _, value) in reader.entries(node, key, allowed: ["failures", "cooldown"]) ?? [] {
            switch name {
            case "failures": reader.integer(value, "\(key).failures", range: 1...10_000).map { policy.failureThreshold = $0 }
            case "cooldown": reader.duration(value, "\(key).cooldown").map { policy.cooldown = $0 }
            default: break
            }
        }
        policy.enabled = true
        return policy
    }

    /// `store_response`: `false` (nothing), `true` (the default 4 KiB), or a size up to 64 KiB.
    private static func readStoreResponse(_ node: Node, _ key: String, reader: ConfigReader) -> Int? {
        guard let text = reader.string(node, key) else { return nil }
        switch text.lowercased() {
        case "false", "no", "off": return 0
        case "true", "yes", "on": return AttemptRecord.defaultResponseBytes
        default:
            guard let bytes = parseSize(text), bytes <= AttemptRecord.maximumResponseBytes else {
                reader.problem(node, key, "must be false, true or a size up to 64KB (such as 512 or 16KB), not '\(text)'")
                return nil
            }
            return bytes
        }
    }

    /// A list of header names (`redact_headers`), lowercased.
    private static func readHeaderNames(_ node: Node, _ key: String, reader: ConfigReader) -> Set<String> {
        guard case .sequence(let items) = node else {
            reader.problem(node, key, "must be a list of header names, such as [X-Api-Key, X-Signature-Secret]")
            return []
        }
        var names = Set<String>()
        for (index, item) in items.enumerated() {
            guard let name = reader.string(item, "\(key)[\(index)]") else { continue }
            guard !name.isEmpty, name.utf8.allSatisfy({ (0x21...0x7E).contains($0) && $0 != UInt8(ascii: ":") }) else {
                reader.problem(item, "\(key)[\(index)]", "must be a header name (visible ASCII, no ':'), not '\(name)'")
                continue
            }
            names.insert(name.lowercased())
        }
        return names
    }

    /// `max_retry_after`: at least a second (a shorter clamp would make every 429 a busy loop).
    private static func readMaxRetryAfter(_ node: Node, _ key: String, reader: ConfigReader) -> Duration? {
        guard let value = reader.duration(node, key) else { return nil }
        guard value >= .seconds(1) else {
            reader.problem(node, key, "must be at least 1s")
            return nil
        }
        return value
    }

    private static func readRateLimit(_ node: Node, _ key: String, reader: ConfigReader) -> RateLimit? {
        guard let text = reader.string(node, key) else { return nil }
        let parts = text.split(separator: "/", maxSplits: 1)
        let period = parts.count == 2 ? (parts[1].first?.isNumber == true ? String(parts[1]) : "1" + parts[1]) : ""
        guard parts.count == 2, let requests = Int(parts[0]), requests > 0, let per = DurationParsing.parse(period), per > .zero else {
            reader.problem(node, key, "must be REQUESTS/DURATION, such as 5/2s or 30/1m, not '\(text)'")
            return nil
        }
        return RateLimit(requests: requests, per: per)
    }

    /// Standard Webhooks secrets: `whsec_` followed by base64. The value is never echoed.
    private static func readSigningSecrets(_ node: Node, _ key: String, reader: ConfigReader) -> [[UInt8]] {
        let items: [(Node, String)]
        if case .sequence(let sequence) = node {
            items = sequence.enumerated().map { ($1, "\(key)[\($0)]") }
        } else {
            items = [(node, key)]
        }
        var secrets: [[UInt8]] = []
        for (item, path) in items {
            guard let text = reader.string(item, path) else { continue }
            guard text.hasPrefix("whsec_"), let bytes = Data(base64Encoded: String(text.dropFirst("whsec_".count))), !bytes.isEmpty
            else {
                reader.problem(item, path, "must be 'whsec_' followed by base64 (a Standard Webhooks secret)")
                continue
            }
            secrets.append(Array(bytes))
        }
        return secrets
    }

    private static let destinationKeys = [
        "formatter", "url", "options", "headers", "timeout", "retry", "rate_limit", "max_concurrency", "ordering", "circuit_breaker",
        "signing_secret", "allow_insecure", "paused", "max_retry_after", "max_crashes", "store_response",
    ]

    private static func readDestination(
        _ name: String, _ keyNode: Node, _ node: Node, defaults: DeliveryDefaults, reader: ConfigReader
    ) -> DestinationConfig? {
        let key = "destinations.\(name)"
        guard let entries = reader.entries(node, key, allowed: destinationKeys) else { return nil }
        var formatter: String?
        var formatterLocation = reader.location(keyNode, key)
        var url: String?
        var options: JSONValue = .object(JSONObject())
        var headers: [(name: String, value: String)] = []
        var timeout = defaults.timeout
        var retry = defaults.retry
        var rateLimit: RateLimit?
        var maxConcurrency = defaults.maxConcurrency
        var ordering = Ordering.concurrent
        var circuitBreaker = defaults.circuitBreaker
        var signingSecrets: [[UInt8]] = []
        var allowInsecure = false
        var paused = false
        var maxRetryAfter = defaults.maxRetryAfter
        var maxCrashes = defaults.maxCrashes
        var storeResponse = AttemptRecord.defaultResponseBytes
        var urlNode: Node?
        for (field, fieldKey, value) in entries {
            let path = "\(key).\(field)"
            switch field {
            case "formatter":
                formatter = reader.string(value, path)
                formatterLocation = reader.location(fieldKey, path)
            case "url":
                urlNode = value
                guard let text = reader.string(value, path) else { continue }
                if let parsed = URL(string: text), let scheme = parsed.scheme?.lowercased(), ["http", "https"].contains(scheme),
                    parsed.host != nil
                {
                    url = text
                } else {
                    // The URL may hold a secret token (Discord and Slack webhook URLs do): it is never echoed.
                    reader.problem(value, path, "must be an http:// or https:// URL with a host")
                }
            case "options":
                guard case .mapping = value else {
                    reader.problem(value, path, "must be a mapping of formatter options")
                    continue
                }
                options = reader.json(value, path)
            case "headers":
                for (headerName, nameNode, headerValue) in reader.entries(value, path) ?? [] {
                    let headerPath = "\(path).\(headerName)"
                    guard HeaderField.isValidName(headerName) else {
                        reader.problem(nameNode, headerPath, "is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)")
                        continue
                    }
                    guard let text = reader.string(headerValue, headerPath) else { continue }
                    // The value may be a secret: it is never echoed.
                    guard HeaderField.isValidValue(text) else {
                        reader.problem(
                            headerValue, headerPath,
                            "the value has a control character or leading or trailing whitespace (a secret file ending in two newlines?); it is not shown"
                        )
                        continue
                    }
                    headers.append((headerName, text))
                }
            case "timeout": reader.duration(value, path).map { timeout = $0 }
            case "retry": retry = readRetry(value, path, base: defaults.retry, reader: reader)
            case "rate_limit": rateLimit = readRateLimit(value, path, reader: reader)
            case "max_concurrency": reader.integer(value, path, range: 1...1024).map { maxConcurrency = $0 }
            case "ordering": reader.choice(value, path, as: Ordering.self).map { ordering = $0 }
            case "circuit_breaker": circuitBreaker = readCircuitBreaker(value, path, base: defaults.circuitBreaker, reader: reader)
            case "signing_secret": signingSecrets = readSigningSecrets(value, path, reader: reader)
            case "allow_insecure": reader.bool(value, path).map { allowInsecure = $0 }
            case "paused": reader.bool(value, path).map { paused = $0 }
            case "max_retry_after": readMaxRetryAfter(value, path, reader: reader).map { maxRetryAfter = $0 }
            case "max_crashes": reader.integer(value, path, range: 1...100).map { maxCrashes = $0 }
            case "store_response": readStoreResponse(value, path, reader: reader).map { storeResponse = $0 }
            default: break
            }
        }
        if let url, !allowInsecure, let parsed = URL(string: url), parsed.scheme?.lowercased() == "http", !isLoopback(parsed.host ?? "") {
            reader.problem(
                urlNode, "\(key).url",
                "must be https:// (plain http is only allowed to loopback); set allow_insecure: true on destination '\(name)' to send in clear text anyway"
            )
        }
        guard let formatter else {
            reader.problem(keyNode, key, "needs 'formatter' (the name of a formatter plugin, such as discord)")
            return nil
        }
        guard let url else {
            if !entries.contains(where: { $0.0 == "url" }) { reader.problem(keyNode, key, "needs 'url'") }
            return nil
        }
        return DestinationConfig(
            name: name, formatter: formatter, options: options, url: url, headers: headers, timeout: timeout, retry: retry,
            rateLimit: rateLimit, maxConcurrency: ordering == .fifo ? 1 : maxConcurrency, ordering: ordering,
            circuitBreaker: circuitBreaker, signingSecrets: signingSecrets, paused: paused, maxRetryAfter: maxRetryAfter,
            maxCrashes: maxCrashes, storeResponseBytes: storeResponse, location: formatterLocation)
    }

    /// A loopback IP literal (127.0.0.0/8, ::1) or `localhost`; nothing that merely starts like one
    /// (`127.attacker.example` is a name anyone can point anywhere).
    static func isLoopback(_ host: String) -> Bool {
        let host = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if host == "localhost" { return true }
        var ipv4 = in_addr()
        if inet_pton(AF_INET, host, &ipv4) == 1 { return UInt32(bigEndian: ipv4.s_addr) >> 24 == 127 }
        var ipv6 = in6_addr()
        if inet_pton(AF_INET6, host, &ipv6) == 1 {
            return withUnsafeBytes(of: &ipv6) { bytes in bytes.prefix(15).allSatisfy { $0 == 0 } && bytes[15] == 1 }
        }
        return false
    }

    private static func readSource(
        _ name: String, _ keyNode: Node, _ node: Node, destinations: [String: DestinationConfig], definedDestinations: Set<String>,
        redactHeaders: Set<String>, reader: ConfigReader
    ) -> SourceConfig? {
        let key = "sources.\(name)"
        if !name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }) {
            reader.problem(keyNode, key, "a source name may use only letters, digits, '-', '_' and '.' (it is part of the URL)")
        }
        guard
            let entries = reader.entries(
                node, key,
                allowed: [
                    "verify", "destinations", "mapping", "mapper", "mapper_options", "idempotency_key", "rate_limit", "replay",
                    "redact_headers",
                ])
        else { return nil }
        var source = SourceConfig(
            name: name, verify: nil, idempotencyKey: nil, mapper: nil, mapping: [], routes: [], rateLimit: nil, replay: true,
            location: reader.location(keyNode, key))
        var mapperOptions: JSONValue = .object(JSONObject())
        var idempotencyKeyGiven = false
        source.redaction.extra = redactHeaders
        for (field, fieldKey, value) in entries {
            let path = "\(key).\(field)"
            switch field {
            case "replay": reader.bool(value, path).map { source.replay = $0 }
            case "redact_headers": source.redaction.extra.formUnion(readHeaderNames(value, path, reader: reader))
            case "verify": source.verify = readVerify(value, path, reader: reader)
            case "rate_limit": source.rateLimit = readRateLimit(value, path, reader: reader)
            case "idempotency_key":
                guard let text = reader.string(value, path) else { continue }
                idempotencyKeyGiven = true
                if text == "none" { continue }
                do {
                    source.idempotencyKey = try ValueSelector(parsing: text)
                } catch {
                    reader.problem(value, path, "\(error) (use header:NAME or body:$.path)")
                }
            case "mapper":
                if let plugin = reader.string(value, path) {
                    source.mapper = (plugin, .object(JSONObject()), reader.location(fieldKey, path))
                }
            case "mapper_options":
                mapperOptions = reader.json(value, path)
            case "mapping":
                for (fieldName, _, spec) in reader.entries(value, path) ?? [] {
                    if let mapped = readMappedField(fieldName, spec, "\(path).\(fieldName)", reader: reader) {
                        source.mapping.append(mapped)
                    }
                }
            case "destinations":
                guard case .sequence(let items) = value else {
                    reader.problem(value, path, "must be a list of destination names or {to: NAME, formatter: ..., options: ...}")
                    continue
                }
                var seen = Set<String>()
                for (index, item) in items.enumerated() {
                    guard
                        let route = readRoute(
                            item, "\(path)[\(index)]", destinations: destinations, definedDestinations: definedDestinations, reader: reader)
                    else { continue }
                    if !seen.insert(route.destination).inserted {
                        reader.problem(item, "\(path)[\(index)]", "destination '\(route.destination)' is listed twice")
                        continue
                    }
                    source.routes.append(route)
                }
            default: break
            }
        }
        if var mapper = source.mapper {
            mapper.options = mapperOptions
            source.mapper = mapper
        }
        // A preset whose sender gives each event a unique id deduplicates by it unless the source says otherwise
        // (`idempotency_key: none` turns it off).
        if !idempotencyKeyGiven, let preset = source.verify?.preset {
            source.idempotencyKey = preset.defaultIdempotencyKey
            source.idempotencyFallback = preset == .standardWebhooks ? .header("svix-id") : nil
        }
        if source.routes.isEmpty, !entries.contains(where: { $0.0 == "destinations" }) {
            reader.problem(keyNode, key, "needs 'destinations': a list of destinations its events are delivered to")
        }
        return source
    }

    private static let hmacOnlyKeys = ["header", "algorithm", "encoding", "prefix", "timestamp_header", "signed"]

    /// A source's `verify` section. Secret values are never echoed in problems.
    private static func readVerify(_ node: Node, _ key: String, reader: ConfigReader) -> VerifyConfig? {
        let allowed = ["preset", "secret", "tolerance"] + hmacOnlyKeys
        guard let entries = reader.entries(node, key, allowed: allowed) else { return nil }
        guard let (_, _, presetNode) = entries.first(where: { $0.0 == "preset" }),
            let presetText = reader.string(presetNode, "\(key).preset")
        else {
            reader.problem(node, key, "needs 'preset': one of \(VerifyConfig.Preset.allCases.map(\.rawValue).joined(separator: ", "))")
            return nil
        }
        guard let preset = VerifyConfig.Preset(rawValue: presetText) else {
            let names = VerifyConfig.Preset.allCases.map(\.rawValue)
            let hint = PluginOptions.closest(to: presetText, in: names).map { " (did you mean '\($0)'?)" } ?? ""
            reader.problem(presetNode, "\(key).preset", "unknown preset '\(presetText)'\(hint); one of \(names.joined(separator: ", "))")
            return nil
        }
        var config = VerifyConfig(preset: preset, secrets: [])
        var sawSecret = false
        for (field, fieldKey, value) in entries {
            let path = "\(key).\(field)"
            if hmacOnlyKeys.contains(field), preset != .hmac {
                reader.problem(fieldKey, path, "is only used with preset 'hmac'")
                continue
            }
            switch field {
            case "secret":
                sawSecret = true
                let items: [(Node, String)]
                if case .sequence(let sequence) = value {
                    items = sequence.enumerated().map { ($1, "\(path)[\($0)]") }
                } else {
                    items = [(value, path)]
                }
                for (item, itemPath) in items {
                    guard let text = reader.string(item, itemPath) else { continue }
                    guard !text.isEmpty else {
                        reader.problem(item, itemPath, "is empty")
                        continue
                    }
                    if preset == .standardWebhooks {
                        guard text.hasPrefix("whsec_"), let bytes = Data(base64Encoded: String(text.dropFirst(6))), !bytes.isEmpty else {
                            reader.problem(item, itemPath, "must be 'whsec_' followed by base64 (a Standard Webhooks secret)")
                            continue
                        }
                        config.secrets.append(Array(bytes))
                    } else {
                        config.secrets.append(Array(text.utf8))
                    }
                }
            case "tolerance":
                guard let tolerance = reader.duration(value, path) else { continue }
                guard tolerance >= .seconds(1), tolerance <= VerifyConfig.maximumTolerance else {
                    reader.problem(
                        value, path,
                        "must be from 1s to 1h (a signed request captured on the way can be sent again for as long as this)")
                    continue
                }
                config.tolerance = tolerance
            case "header": reader.string(value, path).map { config.header = $0.lowercased() }
            case "algorithm": reader.choice(value, path, as: VerifyConfig.Algorithm.self).map { config.algorithm = $0 }
            case "encoding": reader.choice(value, path, as: VerifyConfig.Encoding.self).map { config.encoding = $0 }
            case "prefix": reader.string(value, path).map { config.prefix = $0 }
            case "timestamp_header": reader.string(value, path).map { config.timestampHeader = $0.lowercased() }
            case "signed":
                guard let text = reader.string(value, path) else { continue }
                guard text.contains("{body}") else {
                    reader.problem(value, path, "must contain {body} (and {timestamp} where the timestamp goes)")
                    continue
                }
                config.signedLayout = text
            default: break
            }
        }
        if !sawSecret { reader.problem(node, key, "needs 'secret' (or a list of secrets during a rotation)") }
        if preset == .hmac, config.header.isEmpty {
            reader.problem(node, key, "preset 'hmac' needs 'header': the header carrying the signature")
        }
        if preset == .hmac, config.signedLayout.contains("{timestamp}"), config.timestampHeader == nil {
            reader.problem(node, key, "'signed' uses {timestamp} but no 'timestamp_header' is given")
        }
        if preset == .hmac, config.timestampHeader != nil, !config.signedLayout.contains("{timestamp}") {
            reader.problem(
                node, key,
                "'timestamp_header' is checked against 'tolerance' but is not part of what is signed ('signed' has no "
                    + "{timestamp}), so anyone can change it; add {timestamp} to 'signed', such as \"{timestamp}.{body}\", or remove "
                    + "timestamp_header")
        }
        return config
    }

    private static func readMappedField(_ name: String, _ node: Node, _ key: String, reader: ConfigReader) -> MappedField? {
        var selectorText: String?
        var selectorNode = node
        var required = false
        var defaultValue: JSONValue?
        if case .scalar = node {
            selectorText = reader.string(node, key)
        } else {
            for (field, _, value) in reader.entries(node, key, allowed: ["path", "required", "default"]) ?? [] {
                switch field {
                case "path":
                    selectorText = reader.string(value, "\(key).path")
                    selectorNode = value
                case "required": reader.bool(value, "\(key).required").map { required = $0 }
                case "default": defaultValue = reader.json(value, "\(key).default")
                default: break
                }
            }
            if selectorText == nil, case .mapping = node {
                reader.problem(node, key, "needs 'path' (a JSON path such as $.repository.full_name, or header:NAME)")
                return nil
            }
        }
        guard let selectorText else { return nil }
        do {
            return MappedField(
                name: name, selector: try ValueSelector(parsing: selectorText), required: required, defaultValue: defaultValue)
        } catch {
            reader.problem(selectorNode, key, error.description)
            return nil
        }
    }

    private static func readRoute(
        _ node: Node, _ key: String, destinations: [String: DestinationConfig], definedDestinations: Set<String>, reader: ConfigReader
    ) -> Route? {
        var name: String?
        var nameNode = node
        var formatter: String?
        var options: JSONValue?
        var formatterNode: Node?
        if case .scalar = node {
            name = reader.string(node, key)
        } else {
            for (field, fieldKey, value) in reader.entries(node, key, allowed: ["to", "formatter", "options"]) ?? [] {
                switch field {
                case "to":
                    name = reader.string(value, "\(key).to")
                    nameNode = value
                case "formatter":
                    formatter = reader.string(value, "\(key).formatter")
                    formatterNode = fieldKey
                case "options":
                    guard case .mapping = value else {
                        reader.problem(value, "\(key).options", "must be a mapping of formatter options")
                        continue
                    }
                    options = reader.json(value, "\(key).options")
                default: break
                }
            }
            if name == nil, case .mapping = node {
                reader.problem(node, key, "needs 'to': the name of a destination")
                return nil
            }
        }
        guard let name else { return nil }
        guard let destination = destinations[name] else {
            if definedDestinations.contains(name) { return nil }
            let hint = PluginOptions.closest(to: name, in: destinations.keys).map { " (did you mean '\($0)'?)" } ?? ""
            reader.problem(nameNode, key, "unknown destination '\(name)'\(hint)")
            return nil
        }
        let overrides = formatter != nil || options != nil
        return Route(
            destination: name, formatter: formatter ?? destination.formatter,
            options: options ?? (formatter == nil ? destination.options : .object(JSONObject())),
            overridesFormatter: overrides,
            location: overrides ? reader.location(formatterNode ?? node, key) : destination.location)
    }
}
