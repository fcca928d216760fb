import CoreMetrics
import Prometheus
import Synchronization

/// The server's metrics, through swift-metrics into a Prometheus registry of its own (not the process-wide
/// `MetricsSystem`, so that several servers in one process, as in the tests, keep separate counts). `GET /metrics`
/// renders the registry in the Prometheus text format. Every name and label is listed in docs/operations.md.
final class HookproxyMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    private let counters = Mutex<[Key: CoreMetrics.Counter]>([:])
    private let timers = Mutex<[Key: CoreMetrics.Timer]>([:])
    private let gauges = Mutex<[Key: CoreMetrics.Gauge]>([:])

    /// A metric's name and label pairs, as the caches find it: one array made per lookup, not a string concatenated
    /// piece by piece (which allocated once per piece on every update).
    private struct Key: Hashable {
        var name: String
        var labels: [String]

        init(_ name: String, _ labels: [(String, String)]) {
            self.name = name
            var flat: [String] = []
            flat.reserveCapacity(labels.count * 2)
            for (key, value) in labels {
                flat.append(key)
                flat.append(value)
            }
            self.labels = flat
        }
    }

    /// Buckets for attempt and format times (seconds to tens of seconds) and for end-to-end latency (up to hours:
    /// retries after an outage).
    init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
        ]
        factory.durationHistogramBuckets["hookproxy_delivery_latency_seconds"] = [
            .milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(300), .seconds(900), .seconds(3600),
            .seconds(4 * 3600), .seconds(24 * 3600),
        ]
        self.factory = factory
    }

    /// The metric `name` with `labels` from `cache`, created with `make` the first time.
    private static func cached<Metric: Sendable>(
        _ cache: borrowing Mutex<[Key: Metric]>, _ name: String, _ labels: [(String, String)], make: () -> Metric
    ) -> Metric {
        let key = Key(name, labels)
        return cache.withLock { cache in
            if let metric = cache[key] { return metric }
            let metric = make()
            cache[key] = metric
            return metric
        }
    }

    /// Adds `amount` to the counter `name` with `labels`.
    func increment(_ name: String, _ labels: [(String, String)] = [], by amount: Int = 1) {
        let factory = self.factory
        Self.cached(counters, name, labels) { CoreMetrics.Counter(label: name, dimensions: labels, factory: factory) }.increment(by: amount)
    }

    /// Records a duration in the histogram `name` with `labels`.
    func record(_ name: String, _ labels: [(String, String)] = [], duration: Duration) {
        let factory = self.factory
        Self.cached(timers, name, labels) { CoreMetrics.Timer(label: name, dimensions: labels, factory: factory) }
            .recordNanoseconds(duration.wholeNanoseconds)
    }

    /// Sets the gauge `name` with `labels`.
    func set(_ name: String, _ labels: [(String, String)] = [], to value: Double) {
        let factory = self.factory
        Self.cached(gauges, name, labels) { CoreMetrics.Gauge(label: name, dimensions: labels, factory: factory) }.record(value)
    }

    /// The Prometheus text exposition of everything recorded.
    func render() -> [UInt8] { registry.emitToBuffer() }
}
