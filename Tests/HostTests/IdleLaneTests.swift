import Foundation
import Testing

@testable import Host

/// The dispatcher does not ask the store about destinations with nothing due on every wake-up (decisions §45), and
/// still sends what becomes due for them at once: new work, a retry's due time, the next in a FIFO line. The idle poll
/// (and lease maintenance, which also looks again at every destination) is 10 minutes here, so that nothing in these
/// tests is found by it.
@Suite("Idle destinations")
struct IdleLaneTests {
    static func config(sink: String) -> String {
        testServerSection() + """
            destinations:
              busy: { formatter: generic, url: "\(sink)/busy" }
              quiet: { formatter: generic, url: "\(sink)/quiet" }
              spare: { formatter: generic, url: "\(sink)/spare" }
              flaky: { formatter: generic, url: "\(sink)/flaky" }
              line: { formatter: generic, url: "\(sink)/line", ordering: fifo }
            sources:
              busy: { destinations: [busy] }
              quiet: { destinations: [quiet] }
              flaky: { destinations: [flaky] }
              line: { destinations: [line] }
            """
    }

    static func start(sink: RecordingSink) async throws -> TestServer {
        try await TestServer.start(yaml: config(sink: sink.url)) { configuration in
            configuration.engine.idlePoll = .seconds(600)
            configuration.engine.maintenanceInterval = .seconds(600)
        }
    }

    /// Claims of `destination` that found nothing, from /metrics.
    static func emptyClaims(_ server: TestServer, _ destination: String) async throws -> Double {
        let metrics = try PrometheusText(try await send(.GET, server.adminURL + "/metrics"))
        return metrics.value("hookproxy_delivery_claims_total", ["destination": destination, "result": "empty"]) ?? 0
    }

    @Test("forty deliveries to one destination do not make the dispatcher claim for the idle ones on each wake-up")
    func idleDestinationsAreNotClaimedForEachWake() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await Self.start(sink: sink)
        var ids: [String] = []
        for n in 0..<40 {
            ids.append(try #require(try await server.post("busy", json: #"{"n":\#(n)}"#).json?["id"]?.stringValue))
        }
        for id in ids { try await server.waitForDeliveries(of: id) }
        // Each idle destination is claimed for once when the dispatcher first looks, and then not until it is marked.
        // Before, every wake-up (each commit and each delivery's end) claimed for each: well over forty each.
        for idle in ["quiet", "spare", "flaky", "line"] {
            let empty = try await Self.emptyClaims(server, idle)
            #expect(empty >= 1 && empty <= 2, "\(idle): \(empty) empty claims")
        }
        try await server.stop()
        try await sink.stop()
    }

    @Test("an event for a destination found idle is sent at once, not at the next idle poll")
    func newWorkForAnIdleDestination() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let server = try await Self.start(sink: sink)
        try await waitUntil("the dispatcher to find 'quiet' idle") { try await Self.emptyClaims(server, "quiet") >= 1 }
        let id = try #require(try await server.post("quiet", json: #"{"n":1}"#).json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id, timeout: .seconds(20))
        #expect(sink.requests("/quiet").count == 1)
        try await server.stop()
        try await sink.stop()
    }

    @Test("a retry is sent when it falls due, and a FIFO line's next when its head is delivered, without the idle poll")
    func retriesAndFIFOLines() async throws {
        let sink = RecordingSink()
        try await sink.start()
        sink.plan("/flaky", statuses: [500, 503])
        sink.plan("/line", statuses: [500])
        let server = try await Self.start(sink: sink)
        let flaky = try #require(try await server.post("flaky", json: #"{"n":1}"#).json?["id"]?.stringValue)
        var line: [String] = []
        for n in 0..<5 {
            line.append(try #require(try await server.post("line", json: #"{"n":\#(n)}"#).json?["id"]?.stringValue))
        }
        try await server.waitForDeliveries(of: flaky, timeout: .seconds(30))
        for id in line { try await server.waitForDeliveries(of: id, timeout: .seconds(30)) }
        #expect(try await server.detail(flaky)?.deliveries.first?.attempts == 3)
        // The head failed once and blocked the line; then all five went in ingest order.
        let sent = sink.requests("/line").compactMap { $0.json?["n"]?.intValue }
        #expect(sent == [0, 0, 1, 2, 3, 4])
        try await server.stop()
        try await sink.stop()
    }
}
