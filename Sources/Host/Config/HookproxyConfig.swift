import Foundation
import PluginKit

/// The whole configuration, decoded and validated once from `sources.yaml`, then immutable.
struct HookproxyConfig: Sendable {
    /// The file it was read from.
    var file: String
    var server: ServerConfig
    var storage: StorageConfig
    var plugins: PluginsConfig
    var destinations: [String: DestinationConfig]
    var sources: [String: SourceConfig]
    /// Where hookproxy's own operational events go; `nil`: nowhere (they are logged only).
    var alerts: AlertsConfig? = nil
}

/// The `alerts` section: hookproxy's own operational events, delivered as events of the internal source
/// `hookproxy.alerts` to one destination through the normal pipeline.
struct AlertsConfig: Sendable {
    enum Kind: String, Sendable, CaseIterable {
        case deliveryDead = "delivery_dead"
        case destinationPaused = "destination_paused"
        case destinationResumed = "destination_resumed"
        case pluginRefused = "plugin_refused"
    }

    /// The internal source alert events are stored under.
    static let source = "hookproxy.alerts"

    var destination: String
    var kinds: Set<Kind> = Set(Kind.allCases)
    /// At most `requests` alert messages per `per` in all; the same alert (kind and destination) at most once per
    /// `per`. Alerts held back are counted and reported with the next message of their kind.
    var rateLimit = RateLimit(requests: 10, per: .seconds(3600))
    var location: ConfigLocation
}

/// A place in the configuration file, for messages that name file, line and key.
struct ConfigLocation: Sendable, Hashable, CustomStringConvertible {
    var file: String
    var line: Int
    var key: String

    var description: String { "\(file):\(line): \(key)" }
}

/// `host:port` to listen on.
struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
    var host: String
    var port: Int

    var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// The `server` section.
struct ServerConfig: Sendable {
    var listen = ListenAddress(host: "0.0.0.0", port: 8080)
    var adminListen = ListenAddress(host: "127.0.0.1", port: 9090)
    /// When set, admin routes other than `/healthz` require `Authorization: Bearer <token>`.
    var adminToken: String?
    /// Host names, besides the admin listener's own address and `localhost`, that admin requests may name in `Host`
    /// (lowercased; a DNS-rebinding page names its own domain and is answered 421).
    var adminHosts: [String] = []
    /// An admin listener on a non-loopback address without `admin_token` runs only when this says so.
    var adminInsecure = false
    var maxBodyBytes = 1_048_576
    /// At shutdown, how long attempts in flight may finish before they are cancelled and released to pending.
    var shutdownGrace: Duration = .seconds(10)
    /// The most headers a request may have.
    var maxHeaders = 100
    /// The most bytes a request's headers may take, in all.
    var maxHeaderBytes = 16_384
    /// A request's body must arrive within this, and an idle connection is closed after it (slow clients are cut off).
    var readTimeout: Duration = .seconds(10)
    /// The most ingest requests handled at once; more are shed with 503 rather than queued in memory.
    var maxConcurrentRequests = 1024
    /// The most of those one client address (``ClientAddress``) may have in progress.
    var maxConcurrentPerClient = 128
    /// A request's body must start arriving within this (a client that sends headers and then nothing is cut off).
    var firstByteTimeout: Duration = .seconds(5)
    /// The first-byte deadline in force: never longer than the whole body's.
    var firstByteDeadline: Duration { min(firstByteTimeout, readTimeout) }
    /// Requests that fail a source's verification, counted per client address; past it, that address's requests to
    /// verified sources are answered 429 before their body is read. Verified requests never count here.
    var rateLimitUnverified = RateLimit(requests: 30, per: .seconds(60))
    /// Proxies whose `X-Forwarded-For` names the client (the per-client limits count that address).
    var trustedProxies: [IPNetwork] = []
}

/// The `storage` section.
struct StorageConfig: Sendable {
    enum Backend: Sendable, Equatable {
        /// An SQLite database file (absolute path).
        case sqlite(path: String)
        /// A PostgreSQL database shared by any number of instances (the URL as written, password included).
        case postgres(url: String)
    }

    var backend: Backend
    /// Finished events older than this are purged.
    var retention: Duration = .seconds(30 * 86_400)
    /// The most the database may grow to, in bytes; past it ingest answers 503 until space is freed (`nil`: the disk).
    var maximumSize: Int?
    /// PostgreSQL: an instance not seen for this long is taken for dead and its claims are released to the others.
    var instanceTimeout: Duration = .seconds(15)
    /// PostgreSQL: the most connections this instance's pool opens (one of them is held for `LISTEN`).
    var maximumConnections = 20
    /// The in-flight journal (``CallJournal``); nil: the default, beside the SQLite file, or `data/hookproxy.inflight`
    /// beside the configuration for PostgreSQL.
    var journal: String?
    /// The directory relative defaults are anchored at (the configuration file's).
    var baseDirectory = "."

    /// Where the in-flight journal is.
    var journalPath: String {
        if let journal { return journal }
        switch backend {
        case .sqlite(let path): return path + ".inflight"
        case .postgres: return ConfigLoader.resolvePath("data/hookproxy.inflight", base: baseDirectory)
        }
    }
}

/// The `plugins` section.
struct PluginsConfig: Sendable {
    /// Absolute path of the directory scanned for `.so` files (it need not exist).
    var directory: String
    /// How every plugin runs unless `overrides` says otherwise.
    var defaults = PluginSettings()
    /// Per plugin (by declared name): settings that differ from `defaults`.
    var overrides: [String: PluginOverride] = [:]

    static let defaultMemoryLimit = 256 << 20

    /// The settings of plugin `name`.
    func settings(for name: String) -> PluginSettings {
        guard let override = overrides[name] else { return defaults }
        var settings = defaults
        if let isolation = override.isolation { settings.isolation = isolation }
        if let timeout = override.callTimeout { settings.callTimeout = timeout }
        if let limit = override.memoryLimit { settings.memoryLimit = limit }
        if let workers = override.workers { settings.workers = workers }
        return settings
    }
}

/// How one plugin's calls run.
struct PluginSettings: Sendable, Equatable {
    var isolation = PluginIsolation.process
    /// A format or map call must answer within this; past it the worker is killed (in process: the call is abandoned).
    var callTimeout: Duration = .seconds(2)
    /// A worker's data segment cap in bytes: an allocation past it fails inside the worker.
    var memoryLimit = PluginsConfig.defaultMemoryLimit
    /// Worker processes (in process: threads) per plugin.
    var workers = 2
}

/// One entry of `plugins.overrides`: what differs for that plugin.
struct PluginOverride: Sendable {
    var isolation: PluginIsolation?
    var callTimeout: Duration?
    var memoryLimit: Int?
    var workers: Int?
    var location: ConfigLocation
}

/// When to try a failed delivery again.
struct RetryPolicy: Sendable, Equatable {
    enum Backoff: Sendable, Equatable {
        /// Explicit delays: the n-th retry waits `delays[n-1]`; after the last one the delivery is dead.
        case schedule([Duration])
        /// `initial * multiplier^(n-1)`, capped at `maximum`, for at most `attempts` attempts in all.
        case exponential(initial: Duration, multiplier: Double, maximum: Duration, attempts: Int)
    }

    var backoff: Backoff = .schedule([
        .seconds(5), .seconds(60), .seconds(300), .seconds(1800), .seconds(7200), .seconds(18000), .seconds(36000),
    ])
    /// Each delay is randomised by ±jitter (a fraction, 0...1).
    var jitter = 0.2
    /// No retry is scheduled for an event older than this: the delivery is dead instead.
    var maximumAge: Duration?
    /// 4xx statuses that are retried; any other 4xx is permanent (dead at once). 5xx are always retried.
    var retryableStatuses: Set<Int> = [408, 409, 425, 429]

    /// The largest number of attempts a delivery gets before it is dead.
    var maximumAttempts: Int {
        switch backoff {
        case .schedule(let delays): delays.count + 1
        case .exponential(_, _, _, let attempts): attempts
        }
    }

    /// The delay before attempt `attempt + 1`, after `attempt` failed attempts; `nil` when the delivery is out of attempts.
    func delay(afterAttempt attempt: Int, random: Double = RandomWords.signedUnit()) -> Duration? {
        guard attempt < maximumAttempts else { return nil }
        let base: Duration
        switch backoff {
        case .schedule(let delays):
            // `attempt < maximumAttempts` (delays.count + 1) keeps the index in range.
            base = delays[min(delays.count - 1, max(0, attempt - 1))]
        case .exponential(let initial, let multiplier, let maximum, _):
            // `initial * multiplier^n` overflows to infinity for long schedules, and `0 * infinity` is NaN: both mean
            // the cap.
            let seconds = initial.seconds * pow(multiplier, Double(max(0, attempt - 1)))
            base = Duration(untrustedSeconds: seconds, atMost: maximum) ?? maximum
        }
        let factor = 1 + jitter * max(-1, min(1, random.isFinite ? random : 0))
        return .milliseconds(Int64(finite: max(0, base.seconds * factor * 1000)) ?? base.wholeMilliseconds)
    }
}

/// `N/duration`: at most N requests in any window of that duration, a strict sliding window (docs/decisions.md §13).
struct RateLimit: Sendable, Equatable, CustomStringConvertible {
    var requests: Int
    var per: Duration

    var description: String { "\(requests)/\(per.compactDescription)" }
}

/// How a destination's deliveries are ordered.
enum Ordering: String, Sendable, CaseIterable {
    /// Any order, up to `max_concurrency` at once (the default).
    case concurrent
    /// Strictly in ingest order, one at a time; a failing head blocks the line until delivered or dead.
    case fifo
}

/// When to pause a destination that keeps failing.
struct CircuitBreakerPolicy: Sendable, Equatable {
    /// False: never pause.
    var enabled = true
    /// Consecutive failed attempts that open the circuit.
    var failureThreshold = 5
    /// How long the destination is paused before one probe request is let through.
    var cooldown: Duration = .seconds(30)
}

/// A named destination from `destinations`.
struct DestinationConfig: Sendable {
    var name: String
    /// The declared name of the formatter plugin.
    var formatter: String
    /// Options for the formatter instance, as JSON.
    var options: JSONValue
    var url: String
    /// Static headers added to every request.
    var headers: [(name: String, value: String)]
    /// The whole request (connect, send, response) must finish within this.
    var timeout: Duration
    var retry: RetryPolicy
    var rateLimit: RateLimit?
    /// The most requests in flight to this destination at once.
    var maxConcurrency: Int
    var ordering: Ordering
    var circuitBreaker: CircuitBreakerPolicy
    /// Standard Webhooks signing keys (the bytes after `whsec_`); several during a rotation.
    var signingSecrets: [[UInt8]]
    /// `paused: true`: nothing is sent; deliveries wait (without spending attempts) until it is unset and reloaded.
    var paused = false
    /// The longest wait a destination's answer (`Retry-After`, `X-RateLimit-Reset-After`, `retry_after`) is honoured
    /// for; a longer one is logged and clamped to this.
    var maxRetryAfter: Duration = DestinationConfig.defaultMaxRetryAfter
    /// A delivery that was being attempted during this many abnormal exits of the process in a row is quarantined.
    var maxCrashes = DestinationConfig.defaultMaxCrashes
    /// How many bytes of each answer's body the attempt log keeps (0: none, for receivers that echo requests back).
    var storeResponseBytes = AttemptRecord.defaultResponseBytes
    var location: ConfigLocation

    static let defaultMaxRetryAfter: Duration = .seconds(3600)
    static let defaultMaxCrashes = 3
}

/// One field of a source's declarative `mapping`.
struct MappedField: Sendable {
    var name: String
    var selector: ValueSelector
    var required: Bool
    var defaultValue: JSONValue?
}

/// One entry of a source's `destinations` list: where its events go and which formatter instance formats them.
struct Route: Sendable {
    var destination: String
    var formatter: String
    var options: JSONValue
    /// True when the source overrides the destination's formatter or options.
    var overridesFormatter: Bool
    var location: ConfigLocation
}

/// A named source from `sources`: what `POST /webhooks/{name}` accepts.
struct SourceConfig: Sendable {
    var name: String
    /// How requests prove they come from the sender; `nil`: not checked.
    var verify: VerifyConfig?
    /// `header:NAME` or `body:$.path`: requests with a key seen before are answered as duplicates.
    var idempotencyKey: ValueSelector?
    /// Where the key is read when `idempotencyKey` finds nothing (a preset's other spelling: `svix-id`).
    var idempotencyFallback: ValueSelector?
    /// A mapping plugin and its options, applied before the declarative mapping.
    var mapper: (name: String, options: JSONValue, location: ConfigLocation)?
    var mapping: [MappedField]
    var routes: [Route]
    /// At most this many requests are accepted for the source in any such window; more get 429 with `Retry-After`.
    var rateLimit: RateLimit?
    /// False: replay answers 403.
    var replay: Bool
    /// Which headers are stored as `"[redacted]"`.
    var redaction = HeaderRedaction()
    var location: ConfigLocation

    /// True when a request must carry a JSON body (a required mapped field reads the body).
    var requiresJSON: Bool { mapping.contains { $0.required && $0.selector.readsBody } }
}

extension Duration {
    /// As `sources.yaml` writes it: `500ms`, `2s`, `5m`, `2h`, `30d`.
    var compactDescription: String {
        let milliseconds = wholeMilliseconds
        for (unit, size) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000)]
        where milliseconds % size == 0 && milliseconds >= size {
            return "\(milliseconds / size)\(unit)"
        }
        return "\(milliseconds)ms"
    }

    /// The duration in seconds, as a double.
    var seconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }
}
