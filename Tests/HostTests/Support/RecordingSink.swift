import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import PluginKit
import ServiceLifecycle
import Synchronization

/// A real HTTP destination on loopback that records every request and answers with planned statuses (200 by default).
final class RecordingSink: Sendable {
    /// A scripted answer.
    struct Planned: Sendable {
        var status: Int
        var headers: [(String, String)] = []
        var body: String?
        /// Hold the answer this long before sending it.
        var delay: Duration = .zero
    }

    struct Recorded: Sendable {
        /// When it arrived, in ms since the Unix epoch.
        var arrivedAt: Int64
        var path: String
        var headers: [(String, String)]
        var body: [UInt8]

        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
        var json: JSONValue? { try? JSONValue(parsing: body) }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    private struct State {
        var requests: [Recorded] = []
        /// Answers per path, in order; when none is left, `standard`.
        var planned: [String: [Planned]] = [:]
        var standard = Planned(status: 200)
    }

    private let state = Mutex(State())
    private let group = Mutex<ServiceGroup?>(nil)
    private let boundPort = Mutex<Int?>(nil)
    private let task = Mutex<Task<Void, any Error>?>(nil)

    /// Starts listening on `port` (0: any free port) and returns once bound.
    func start(port: Int = 0) async throws {
        let router = Router()
        router.post("**") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 16 << 20)
            let arrivedAt = Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
            let planned = self.state.withLock { state -> Planned in
                state.requests.append(
                    Recorded(
                        arrivedAt: arrivedAt, path: request.uri.path,
                        headers: request.headers.map { ($0.name.canonicalName, $0.value) }, body: Array(body.readableBytesView)))
                guard var queue = state.planned[request.uri.path], !queue.isEmpty else { return state.standard }
                let next = queue.removeFirst()
                state.planned[request.uri.path] = queue
                return next
            }
            if planned.delay > .zero { try await Task.sleep(for: planned.delay) }
            var headers: HTTPFields = [.contentType: "text/plain"]
            for (name, value) in planned.headers { headers[HTTPField.Name(name)!] = value }
            // 204 and 304 have no body: bytes after one would be read as the start of the next response on the connection.
            if planned.status == 204 || planned.status == 304 { return Response(status: .init(code: planned.status), headers: headers) }
            let text = planned.body ?? (planned.status < 300 ? "ok" : "failure \(planned.status)")
            return Response(status: .init(code: planned.status), headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        let ready = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)),
            onServerRunning: { channel in ready.continuation.yield(channel.localAddress?.port ?? 0) },
            logger: testLogger)
        let serviceGroup = ServiceGroup(configuration: .init(services: [app], logger: testLogger))
        group.withLock { $0 = serviceGroup }
        let runTask = Task { try await serviceGroup.run() }
        task.withLock { $0 = runTask }
        var iterator = ready.stream.makeAsyncIterator()
        guard let bound = await iterator.next() else { throw TimedOut(what: "the sink to listen") }
        boundPort.withLock { $0 = bound }
    }

    var port: Int { boundPort.withLock { $0 ?? 0 } }
    var url: String { "http://127.0.0.1:\(port)" }

    /// Answers the next requests to `path` with these statuses, in order.
    func plan(_ path: String, statuses: [Int]) { plan(path, responses: statuses.map { Planned(status: $0) }) }

    /// The answer when nothing is planned (200 "ok" unless set).
    func answerByDefault(_ planned: Planned) { state.withLock { $0.standard = planned } }

    /// Answers the next requests to `path` as scripted, in order.
    func plan(_ path: String, responses: [Planned]) { state.withLock { $0.planned[path, default: []] += responses } }

    /// Every request so far, or those to `path`.
    func requests(_ path: String? = nil) -> [Recorded] {
        state.withLock { state in path.map { path in state.requests.filter { $0.path == path } } ?? state.requests }
    }

    func stop() async throws {
        await group.withLock { $0 }?.triggerGracefulShutdown()
        try await task.withLock { $0 }?.value
    }
}
