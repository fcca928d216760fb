import CoreMetrics
import Synchronization

/// The metrics one destination's attempts update, kept per destination so that counting an attempt builds no label
/// key and looks up no metric by name (three or four of each per delivery before: 2.8% of a drain's CPU). Each metric is
/// made on its first update, as ``HookproxyMetrics`` would make it, so `/metrics` shows the same series as before.
final class DeliveryMeters: Sendable {
    private let metrics: HookproxyMetrics
    private let destination: String
    private let made = Mutex(Made())

    private struct Made {
        var attempts = [CoreMetrics.Counter?](repeating: nil, count: Verdict.CountedAs.allCases.count)
        var rateLimitedAnswers: CoreMetrics.Counter?
        var closedWindows: CoreMetrics.Counter?
        var attemptDuration: CoreMetrics.Timer?
        var latency: CoreMetrics.Timer?
    }

    init(metrics: HookproxyMetrics, destination: String) {
        self.metrics = metrics
        self.destination = destination
    }

    /// Counts an attempt by its verdict (`hookproxy_delivery_attempts_total`), and a 429 as a rate-limit wait.
    func attempt(_ counted: Verdict.CountedAs) {
        let index = Verdict.CountedAs.allCases.firstIndex(of: counted) ?? 0
        made.withLock { made in
            made.attempts[index] =
                made.attempts[index]
                ?? metrics.counter(
                    "hookproxy_delivery_attempts_total", [("destination", destination), ("outcome", counted.rawValue)])
            made.attempts[index]?.increment()
            guard counted == .rateLimited else { return }
            made.rateLimitedAnswers =
                made.rateLimitedAnswers
                ?? metrics.counter(
                    "hookproxy_rate_limit_waits_total", [("destination", destination), ("reason", "429")])
            made.rateLimitedAnswers?.increment()
        }
    }

    /// Counts a wait for a rate-limit window learned after the delivery was admitted.
    func closedWindow() {
        made.withLock { made in
            made.closedWindows =
                made.closedWindows
                ?? metrics.counter(
                    "hookproxy_rate_limit_waits_total", [("destination", destination), ("reason", "window")])
            made.closedWindows?.increment()
        }
    }

    /// Records how long an attempt took (`hookproxy_delivery_attempt_duration_seconds`).
    func attemptDuration(milliseconds: Int64) {
        made.withLock { made in
            made.attemptDuration =
                made.attemptDuration
                ?? metrics.timer(
                    "hookproxy_delivery_attempt_duration_seconds", [("destination", destination)])
            made.attemptDuration?.recordNanoseconds(Duration.milliseconds(milliseconds).wholeNanoseconds)
        }
    }

    /// Records the time from an event's receipt to its delivery (`hookproxy_delivery_latency_seconds`).
    func latency(milliseconds: Int64) {
        made.withLock { made in
            made.latency = made.latency ?? metrics.timer("hookproxy_delivery_latency_seconds", [("destination", destination)])
            made.latency?.recordNanoseconds(Duration.milliseconds(milliseconds).wholeNanoseconds)
        }
    }
}
