import Logging
import Synchronization

/// Flow control for one destination: its concurrency cap, rate limit (never more than N requests in any window of the
/// configured length), the rate-limit window learned from its answers, FIFO (one at a time) and its circuit breaker.
/// The engine asks a lane how many deliveries may start now and tells it how each attempt went; a lane never touches the store, so one slow or failing destination holds up
/// nobody else.
final class DestinationLane: Sendable {
    /// The breaker's state.
    enum Circuit: Sendable, Equatable {
        case closed
        /// Paused until this time (ms); queued deliveries wait without spending attempts.
        case open(until: Int64)
        /// The cool-down passed: one probe request is let through.
        case halfOpen
    }

    /// How an attempt went, as far as flow control cares.
    enum Feedback: Sendable, Equatable {
        case succeeded
        /// A retryable failure (5xx, timeout, connection error): counts towards opening the circuit.
        case failed
        /// The destination said to wait (429): nothing is sent to it before `until`.
        case rateLimited(until: Int64)
        /// Nothing to learn (a permanent verdict, a formatter decision, a release at shutdown).
        case neutral
    }

    /// What the admin API shows.
    struct Snapshot: Sendable {
        var name: String
        var inFlight: Int
        var circuit: Circuit
        var consecutiveFailures: Int
        var rateLimitedUntil: Int64?
        var ordering: Ordering
        var rateLimit: RateLimit?
        var maxConcurrency: Int
        /// Why nothing is sent: `config` (`paused: true`), `operator` (the admin API), or nil.
        var suspendedBy: String?

        /// `suspended` (by the file or an operator), `healthy`, `rate_limited`, `paused` (circuit open) or `probing`
        /// (half open).
        var state: String {
            if suspendedBy != nil { return "suspended" }
            switch circuit {
            case .open: return "paused"
            case .halfOpen: return "probing"
            case .closed: return rateLimitedUntil == nil ? "healthy" : "rate_limited"
            }
        }
    }

    /// What a lane takes from its destination's configuration; changed in place by a reload.
    struct Settings: Sendable, Equatable {
        var ordering: Ordering
        var maxConcurrency: Int
        var rateLimit: RateLimit?
        var breaker: CircuitBreakerPolicy
        /// `paused: true` in the configuration.
        var paused: Bool

        init(_ destination: DestinationConfig) {
            ordering = destination.ordering
            maxConcurrency = destination.ordering == .fifo ? 1 : destination.maxConcurrency
            rateLimit = destination.rateLimit
            breaker = destination.circuitBreaker
            paused = destination.paused
        }

        /// The rate limit's window in milliseconds.
        var rateWindow: Int64 { rateLimit?.per.wholeMilliseconds ?? 0 }
    }

    private struct State {
        var settings: Settings
        /// Suspended by an operator (admin API): a copy of what the store records, shared by every instance.
        var suspended = false
        var inFlight = 0
        /// One entry per request that still counts against the rate limit: `Int64.max` while it is in flight, then the
        /// time its answer arrived. A request counts until `per` after its answer, so however the network delays the
        /// requests, the destination never receives more than N within any window of length `per`.
        var rateEntries: [Int64] = []
        var windowUntil: Int64 = 0
        var failures = 0
        var circuit = Circuit.closed
        var probeInFlight = false
        /// The rate-limit bucket the destination's last answer named.
        var bucket: String?
    }

    let name: String
    private let state: Mutex<State>
    private let buckets: RateLimitBuckets
    private let logger: Logger

    init(destination: DestinationConfig, buckets: RateLimitBuckets = RateLimitBuckets(), logger: Logger) {
        self.buckets = buckets
        name = destination.name
        state = Mutex(State(settings: Settings(destination)))
        var logger = logger
        logger[metadataKey: "destination"] = "\(destination.name)"
        self.logger = logger
    }

    /// Suspends (true) or resumes (false) sending, as an operator asked (recorded in the store). True when it changed.
    @discardableResult
    func setSuspended(_ suspended: Bool) -> Bool {
        state.withLock { state in
            defer { state.suspended = suspended }
            return state.suspended != suspended
        }
    }

    /// The ordering in force.
    var ordering: Ordering { state.withLock { $0.settings.ordering } }
    var maxConcurrency: Int { state.withLock { $0.settings.maxConcurrency } }
    /// Whether the destination has a `rate_limit` (whose window, once used up, holds the lane back).
    var isRateLimited: Bool { state.withLock { $0.settings.rateLimit != nil } }
    /// Attempts started and not yet finished.
    var inFlight: Int { state.withLock { $0.inFlight } }

    /// Applies a reloaded destination's settings; what the lane has learned (in flight, windows, breaker) is kept.
    /// True when anything changed.
    @discardableResult
    func reconfigure(_ destination: DestinationConfig) -> Bool {
        let settings = Settings(destination)
        return state.withLock { state in
            guard state.settings != settings else { return false }
            state.settings = settings
            if !settings.breaker.enabled, state.circuit != .closed { state.circuit = .closed }
            return true
        }
    }

    /// How many deliveries may start at `now`. When none, `wakeAt` is when that changes by itself (`nil`: only when an
    /// attempt in flight finishes).
    func admission(now: Int64) -> (slots: Int, wakeAt: Int64?) {
        var message: String?
        let result = state.withLock { state -> (Int, Int64?) in
            let settings = state.settings
            let rateWindow = settings.rateWindow
            if settings.rateLimit != nil {
                let windowStart = now - rateWindow
                state.rateEntries.removeAll { $0 <= windowStart }
            }
            // Suspended (by the file or an operator): nothing starts until resumed; attempts in flight finish.
            if state.settings.paused || state.suspended { return (0, nil) }
            if let until = closedWindow(state, now: now) { return (0, until) }
            switch state.circuit {
            case .open(let until):
                if now < until { return (0, until) }
                state.circuit = .halfOpen
                state.probeInFlight = false
                message = "circuit half open: probing with one request"
            case .halfOpen:
                if state.probeInFlight { return (0, nil) }
            case .closed:
                break
            }
            var slots = settings.maxConcurrency - state.inFlight
            if slots <= 0 { return (0, nil) }
            if state.circuit == .halfOpen { slots = 1 }
            if let rateLimit = settings.rateLimit {
                let left = rateLimit.requests - state.rateEntries.count
                if left < 1 {
                    let oldest = state.rateEntries.min() ?? .max
                    return (0, oldest == .max ? nil : oldest + rateWindow + 1)
                }
                slots = min(slots, left)
            }
            return (slots, nil)
        }
        if let message { logger.notice("\(message)") }
        return result
    }

    /// Records that `count` deliveries were claimed and are about to be sent.
    func started(_ count: Int) {
        guard count > 0 else { return }
        state.withLock { state in
            state.inFlight += count
            if state.settings.rateLimit != nil { state.rateEntries += Array(repeating: .max, count: count) }
            if state.circuit == .halfOpen { state.probeInFlight = true }
        }
    }

    /// Learns the rate-limit state an answer announced, the moment it arrives (before its outcome is committed), so that
    /// no lane sharing the bucket is admitted meanwhile. `window` is a window the destination announced (Discord's
    /// `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset-After`), also on a success; `bucket` the rate-limit bucket its
    /// answer named, whose windows are shared with other destinations.
    func learn(_ feedback: Feedback, window: Int64? = nil, bucket: String? = nil) {
        state.withLock { state in
            if let bucket { state.bucket = bucket }
            var learned = window
            if case .rateLimited(let until) = feedback { learned = max(learned ?? 0, until) }
            guard let learned else { return }
            state.windowUntil = max(state.windowUntil, learned)
            if let bucket = state.bucket { buckets.block(bucket, until: learned) }
        }
    }

    /// When a window learned since this lane admitted a delivery (its own, or its bucket's) is still closed at `now`:
    /// the time it opens. A delivery admitted just before another lane's answer closed the bucket waits for it.
    func closedUntil(now: Int64) -> Int64? { state.withLock { closedWindow($0, now: now) } }

    /// The end of the later of the lane's own learned window and its bucket's, when either is still closed at `now`.
    private func closedWindow(_ state: State, now: Int64) -> Int64? {
        var until = state.windowUntil > now ? state.windowUntil : nil
        if let bucket = state.bucket, let bucketUntil = buckets.closedUntil(bucket, now: now) { until = max(until ?? 0, bucketUntil) }
        return until
    }

    /// A change of the circuit breaker that operators hear about.
    enum CircuitChange: Sendable, Equatable {
        /// Paused (again, when a probe failed) after `failures` consecutive failures, until this time (ms).
        case opened(until: Int64, failures: Int, again: Bool)
        /// Answers again after a pause.
        case closed
    }

    /// Records that one attempt is over and how it went (after ``learn(_:window:bucket:)``): frees its slot, starts its
    /// rate-limit entry's window and moves the circuit breaker. Returns the breaker's change, if any.
    @discardableResult
    func finished(_ feedback: Feedback, now: Int64 = Clock.milliseconds()) -> CircuitChange? {
        var message: (Logger.Level, String)?
        var change: CircuitChange?
        state.withLock { state in
            state.inFlight = max(0, state.inFlight - 1)
            if let pending = state.rateEntries.firstIndex(of: .max) { state.rateEntries[pending] = now }
            let wasProbe = state.circuit == .halfOpen
            if wasProbe { state.probeInFlight = false }
            switch feedback {
            case .succeeded:
                state.failures = 0
                if state.circuit != .closed {
                    state.circuit = .closed
                    message = (.notice, "circuit closed: the destination answers again")
                    change = .closed
                }
            case .failed:
                state.failures += 1
                let breaker = state.settings.breaker
                guard breaker.enabled else { break }
                let until = now.addingSaturated(breaker.cooldown.wholeMilliseconds)
                if wasProbe {
                    state.circuit = .open(until: until)
                    message = (.warning, "circuit open again: the probe failed; paused for \(breaker.cooldown)")
                    change = .opened(until: until, failures: state.failures, again: true)
                } else if state.circuit == .closed, state.failures >= breaker.failureThreshold {
                    state.circuit = .open(until: until)
                    message = (.warning, "circuit open: \(state.failures) consecutive failures; paused for \(breaker.cooldown)")
                    change = .opened(until: until, failures: state.failures, again: false)
                }
            case .rateLimited, .neutral:
                break
            }
        }
        if let (level, text) = message { logger.log(level: level, "\(text)") }
        return change
    }

    func snapshot(now: Int64 = Clock.milliseconds()) -> Snapshot {
        state.withLock { state in
            Snapshot(
                name: name, inFlight: state.inFlight, circuit: state.circuit, consecutiveFailures: state.failures,
                rateLimitedUntil: state.windowUntil > now ? state.windowUntil : nil, ordering: state.settings.ordering,
                rateLimit: state.settings.rateLimit, maxConcurrency: state.settings.maxConcurrency,
                suspendedBy: state.settings.paused ? "config" : state.suspended ? "operator" : nil)
        }
    }
}
