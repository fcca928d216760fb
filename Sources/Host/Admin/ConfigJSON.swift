import Foundation
import PluginKit

/// The running configuration as JSON for `GET /admin/config`, with every secret redacted: the admin token, verify and
/// signing secrets (only their count is shown), header values, destination URL paths (Discord and Slack webhook URLs
/// carry their token in the path) and plugin options whose key names a secret.
enum ConfigJSON {
    static let redacted: JSONValue = "<redacted>"

    static func render(_ config: HookproxyConfig) -> JSONValue {
        let server = config.server
        return [
            "file": .string(config.file),
            "server": [
                "listen": .string(server.listen.description),
                "admin_listen": .string(server.adminListen.description),
                "admin_token": server.adminToken == nil ? .null : redacted,
                "max_body_bytes": .int(server.maxBodyBytes),
                "max_headers": .int(server.maxHeaders),
                "max_header_bytes": .int(server.maxHeaderBytes),
                "read_timeout": .string(server.readTimeout.compactDescription),
                "max_concurrent_requests": .int(server.maxConcurrentRequests),
                "admin_hosts": .array(server.adminHosts.map(JSONValue.string)),
                "admin_insecure": .bool(server.adminInsecure),
                "max_concurrent_per_client": .int(server.maxConcurrentPerClient),
                "first_byte_timeout": .string(server.firstByteTimeout.compactDescription),
                "rate_limit_unverified": .string(server.rateLimitUnverified.description),
                "trusted_proxies": .array(server.trustedProxies.map { .string($0.description) }),
                "shutdown_grace": .string(server.shutdownGrace.compactDescription),
            ],
            "storage": storage(config.storage),
            "plugins": plugins(config.plugins),
            "destinations": .object(JSONObject(config.destinations.values.sorted { $0.name < $1.name }.map { ($0.name, destination($0)) })),
            "sources": .object(JSONObject(config.sources.values.sorted { $0.name < $1.name }.map { ($0.name, source($0)) })),
            "alerts": config.alerts.map { alerts in
                [
                    "destination": .string(alerts.destination), "on": .array(alerts.kinds.map(\.rawValue).sorted().map(JSONValue.string)),
                    "rate_limit": .string(alerts.rateLimit.description),
                ]
            } ?? .null,
        ]
    }

    static func storage(_ storage: StorageConfig) -> JSONValue {
        let url: String
        switch storage.backend {
        case .sqlite(let path): url = "sqlite:\(path)"
        // Never the password.
        case .postgres(let text): url = (try? PostgresURL(text).display) ?? "postgres://…"
        }
        return [
            "url": .string(url),
            "retention": .string(storage.retention.compactDescription),
            "max_size": storage.maximumSize.map { .int($0) } ?? .null,
            "instance_timeout": .string(storage.instanceTimeout.compactDescription),
            "max_connections": .int(storage.maximumConnections),
            "journal": .string(storage.journalPath),
        ]
    }

    static func plugins(_ plugins: PluginsConfig) -> JSONValue {
        func settings(_ settings: PluginSettings) -> [(String, JSONValue)] {
            [
                ("isolation", .string(settings.isolation.rawValue)), ("call_timeout", .string(settings.callTimeout.compactDescription)),
                ("memory_limit", .int(settings.memoryLimit)), ("workers", .int(settings.workers)),
            ]
        }
        return .object(
            JSONObject(
                [("directory", .string(plugins.directory))] + settings(plugins.defaults) + [
                    (
                        "overrides",
                        .object(
                            JSONObject(
                                plugins.overrides.keys.sorted().map { ($0, .object(JSONObject(settings(plugins.settings(for: $0))))) }))
                    )
                ]))
    }

    static func destination(_ destination: DestinationConfig) -> JSONValue {
        [
            "formatter": .string(destination.formatter),
            "options": options(destination.options),
            "url": .string(url(destination.url)),
            "headers": .object(JSONObject(destination.headers.map { ($0.name, redacted) })),
            "timeout": .string(destination.timeout.compactDescription),
            "retry": retry(destination.retry),
            "rate_limit": destination.rateLimit.map { .string($0.description) } ?? .null,
            "max_concurrency": .int(destination.maxConcurrency),
            "ordering": .string(destination.ordering.rawValue),
            "circuit_breaker": destination.circuitBreaker.enabled
                ? [
                    "failures": .int(destination.circuitBreaker.failureThreshold),
                    "cooldown": .string(destination.circuitBreaker.cooldown.compactDescription),
                ] : false,
            "signing_secrets": .int(destination.signingSecrets.count),
            "max_retry_after": .string(destination.maxRetryAfter.compactDescription),
            "max_crashes": .int(destination.maxCrashes),
            "store_response": .int(destination.storeResponseBytes),
        ]
    }

    static func source(_ source: SourceConfig) -> JSONValue {
        var verify: JSONValue = .null
        if let config = source.verify {
            verify = [
                "preset": .string(config.preset.rawValue),
                "secrets": .int(config.secrets.count),
                "tolerance": .string(config.tolerance.compactDescription),
            ]
            if config.preset == .hmac {
                verify = .object(
                    JSONObject(
                        (verify.objectValue?.members.map { ($0.key, $0.value) } ?? []) + [
                            ("header", .string(config.header)), ("algorithm", .string(config.algorithm.rawValue)),
                            ("encoding", .string(config.encoding.rawValue)), ("prefix", .string(config.prefix)),
                            ("timestamp_header", config.timestampHeader.map(JSONValue.string) ?? .null),
                            ("signed", .string(config.signedLayout)),
                        ]))
            }
        }
        return [
            "verify": verify,
            "idempotency_key": source.idempotencyKey.map { .string($0.description) } ?? .null,
            "redact_headers": .array(source.redaction.extra.sorted().map(JSONValue.string)),
            "mapper": source.mapper.map { ["plugin": .string($0.name), "options": options($0.options)] } ?? .null,
            "mapping": .object(
                JSONObject(
                    source.mapping.map { field in
                        (
                            field.name,
                            [
                                "path": .string(field.selector.description), "required": .bool(field.required),
                                "default": field.defaultValue ?? .null,
                            ]
                        )
                    })),
            "destinations": .array(
                source.routes.map { route in
                    [
                        "destination": .string(route.destination), "formatter": .string(route.formatter),
                        "options": options(route.options),
                    ]
                }),
            "rate_limit": source.rateLimit.map { .string($0.description) } ?? .null,
            "replay": .bool(source.replay),
        ]
    }

    static func retry(_ retry: RetryPolicy) -> JSONValue {
        var backoff: JSONValue
        switch retry.backoff {
        case .schedule(let delays): backoff = ["schedule": .array(delays.map { .string($0.compactDescription) })]
        case .exponential(let initial, let multiplier, let maximum, let attempts):
            backoff = [
                "initial": .string(initial.compactDescription), "multiplier": .number(String(multiplier)),
                "max": .string(maximum.compactDescription), "attempts": .int(attempts),
            ]
        }
        return [
            "backoff": backoff,
            "jitter": .number(String(retry.jitter)),
            "max_age": retry.maximumAge.map { .string($0.compactDescription) } ?? .null,
            "retryable_statuses": .array(retry.retryableStatuses.sorted().map { .int($0) }),
        ]
    }

    /// A URL with everything after the host redacted: `https://discord.com/<redacted>`.
    static func url(_ text: String) -> String {
        guard let components = URLComponents(string: text), let scheme = components.scheme, let host = components.host else {
            return "<redacted>"
        }
        let port = components.port.map { ":\($0)" } ?? ""
        let rest = components.path.isEmpty || components.path == "/" ? (components.query == nil ? "" : "/<redacted>") : "/<redacted>"
        return "\(scheme)://\(host)\(port)\(rest)"
    }

    /// Plugin options with the values of keys that name a secret redacted, at any depth.
    static func options(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let object):
            return .object(
                JSONObject(
                    object.members.map { member in
                        let key = member.key.lowercased()
                        let secret = ["secret", "token", "password", "passwd", "key", "auth", "credential", "url"].contains {
                            key.contains($0)
                        }
                        return (member.key, secret ? redacted : options(member.value))
                    }))
        case .array(let elements):
            return .array(elements.map(options))
        default:
            return value
        }
    }
}
