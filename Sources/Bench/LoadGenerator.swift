import Foundation
import Histogram
import NIOCore
import NIOPosix

/// What one load run measured.
struct LoadResult: Sendable {
    /// Requests answered, by status code.
    var statuses: [Int: Int] = [:]
    /// Requests that got no answer (connection refused, reset or closed mid-request).
    var failed = 0
    /// From the first intended send to the last answer.
    var seconds = 0.0
    /// When the run started (monotonic nanoseconds): request `i` of a constant-rate run was due at
    /// `started + i × 1e9 / rate`.
    var started: UInt64 = 0
    /// Microseconds from the intended send time to the complete answer.
    var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)

    var answered: Int { statuses.values.reduce(0, +) }
    var accepted: Int { statuses[202, default: 0] }
    /// Every request that did not get a 202.
    var errors: Int { failed + answered - accepted }
    var throughput: Double { seconds > 0 ? Double(answered) / seconds : 0 }
    /// "0 errors", or how many with what: "3 errors (503: 2, no answer: 1)".
    var errorSummary: String {
        guard errors > 0 else { return "0 errors" }
        var parts = statuses.filter { $0.key != 202 }.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }
        if failed > 0 { parts.append("no answer: \(failed)") }
        return "\(errors) errors (\(parts.joined(separator: ", ")))"
    }
}

/// How requests are issued.
enum LoadShape: Sendable {
    /// Each connection sends its next request as soon as the previous answer is in, until `count` requests have been
    /// sent or `seconds` have passed (maximum throughput).
    case closedLoop(count: Int?, seconds: Double?)
    /// `rate` requests a second on a fixed schedule for `seconds`, whatever the answers do. A request whose connections
    /// are all busy waits in line, and its latency counts from its scheduled time: no coordinated omission.
    case constantRate(rate: Double, seconds: Double)
}

/// An HTTP/1.1 load generator with keep-alive connections on one event loop: raw request bytes out, status and
/// `Content-Length` in. It costs little CPU, which matters on a machine it shares with the server it measures.
enum LoadGenerator {
    /// Runs `shape` against `127.0.0.1` over `connections` connections, spread over `ports` in turn (several instances
    /// behind no balancer). `request(i)` gives the complete bytes of request number `i` (0-based).
    static func run(
        ports: [Int], connections: Int, shape: LoadShape, group: any EventLoopGroup,
        request: @escaping @Sendable (Int) -> ByteBuffer
    ) async throws -> LoadResult {
        let loop = group.next()
        let run = try await loop.submit { LoadRun(loop: loop, shape: shape, request: request) }.get()
        var channels: [any Channel] = []
        for index in 0..<connections {
            let channel = try await ClientBootstrap(group: loop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            ResponseReader(
                                onResponse: { status in run.answered(slot: index, status: status) },
                                onClose: { run.closed(slot: index) }))
                    }
                }
                .connect(host: "127.0.0.1", port: ports[index % ports.count]).get()
            channels.append(channel)
        }
        let connected = channels
        let result = try await loop.submit { run.start(channels: connected) }.get().get()
        for channel in channels { try? await channel.close() }
        return result
    }
}

/// One run's state, confined to its event loop.
private final class LoadRun: @unchecked Sendable {
    private struct Slot {
        var channel: (any Channel)?
        var intended: UInt64 = 0
        var busy = false
    }

    private let loop: any EventLoop
    private let shape: LoadShape
    private let request: @Sendable (Int) -> ByteBuffer
    private let promise: EventLoopPromise<LoadResult>
    private var slots: [Slot] = []
    private var idle: [Int] = []
    /// Scheduled requests waiting for a connection (constant rate only): request number and intended time.
    private var waiting: [(number: Int, intended: UInt64)] = []
    private var waitingHead = 0
    private var issued = 0
    private var total = Int.max
    private var deadline = UInt64.max
    private var started: UInt64 = 0
    private var lastAnswer: UInt64 = 0
    private var result = LoadResult()
    private var ticker: RepeatedTask?
    private var finished = false

    init(loop: any EventLoop, shape: LoadShape, request: @escaping @Sendable (Int) -> ByteBuffer) {
        self.loop = loop
        self.shape = shape
        self.request = request
        self.promise = loop.makePromise()
    }

    func start(channels: [any Channel]) -> EventLoopFuture<LoadResult> {
        slots = channels.map { Slot(channel: $0) }
        started = Self.now()
        switch shape {
        case .closedLoop(let count, let seconds):
            total = count ?? .max
            if let seconds { deadline = started + UInt64(seconds * 1e9) }
            for index in slots.indices { sendNext(on: index) }
        case .constantRate(let rate, let seconds):
            total = Int(rate * seconds)
            let interval = 1e9 / rate
            idle = Array(slots.indices.reversed())
            ticker = loop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(1)) { [self] _ in
                let due = min(total, Int(Double(Self.now() - started) / interval) + 1)
                while issued < due {
                    let intended = started + UInt64(Double(issued) * interval)
                    // Round robin over idle connections: every connection stays in use, so none sits idle long enough
                    // for the server's idle timeout to close it under a request.
                    if !idle.isEmpty {
                        let slot = idle.removeFirst()
                        send(number: issued, intended: intended, on: slot)
                    } else {
                        waiting.append((issued, intended))
                    }
                    issued += 1
                }
                if issued == total { ticker?.cancel() }
            }
        }
        return promise.futureResult
    }

    func answered(slot index: Int, status: Int) {
        let now = Self.now()
        lastAnswer = now
        result.statuses[status, default: 0] += 1
        result.latency.record((now - slots[index].intended) / 1000)
        slots[index].busy = false
        advance(slot: index)
    }

    func closed(slot index: Int) {
        guard !finished else { return }
        if slots[index].busy { result.failed += 1 }
        slots[index].channel = nil
        slots[index].busy = false
        if slots.allSatisfy({ $0.channel == nil }) {
            // Nothing can be sent any more: everything not yet answered failed.
            result.failed += max(0, (total == .max ? issued : total) - result.answered - result.failed)
            finish()
            return
        }
        advance(slot: index)
    }

    private func advance(slot index: Int) {
        switch shape {
        case .closedLoop:
            if slots[index].channel != nil { sendNext(on: index) }
            if slots.allSatisfy({ !$0.busy }) { finish() }
        case .constantRate:
            if slots[index].channel != nil {
                if waitingHead < waiting.count {
                    let next = waiting[waitingHead]
                    waitingHead += 1
                    send(number: next.number, intended: next.intended, on: index)
                } else {
                    idle.append(index)
                }
            }
            if result.answered + result.failed == total { finish() }
        }
    }

    private func sendNext(on index: Int) {
        guard issued < total, Self.now() < deadline else { return }
        send(number: issued, intended: Self.now(), on: index)
        issued += 1
    }

    private func send(number: Int, intended: UInt64, on index: Int) {
        guard let channel = slots[index].channel else { return }
        slots[index].intended = intended
        slots[index].busy = true
        channel.writeAndFlush(request(number), promise: nil)
    }

    private func finish() {
        guard !finished else { return }
        finished = true
        ticker?.cancel()
        result.seconds = Double(max(lastAnswer, started) - started) / 1e9
        result.started = started
        promise.succeed(result)
    }

    static func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }
}

/// Reads HTTP/1.1 responses framed by `Content-Length` and reports each one's status.
private final class ResponseReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let onResponse: (Int) -> Void
    private let onClose: () -> Void
    private var buffer: ByteBuffer?

    init(onResponse: @escaping (Int) -> Void, onClose: @escaping () -> Void) {
        self.onResponse = onResponse
        self.onClose = onClose
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffer == nil { buffer = incoming } else { buffer!.writeBuffer(&incoming) }
        while let status = nextResponse() { onResponse(status) }
        if buffer?.readableBytes == 0 { buffer = nil }
    }

    func channelInactive(context: ChannelHandlerContext) {
        onClose()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// Consumes one complete response from the buffer, if there is one, and returns its status.
    private func nextResponse() -> Int? {
        guard let buffer else { return nil }
        let frame: (status: Int, length: Int)? = buffer.withUnsafeReadableBytes { bytes in
            guard let end = HTTPHead.end(of: bytes) else { return nil }
            let head = HTTPHead(bytes: UnsafeRawBufferPointer(rebasing: bytes[..<end]))
            guard let status = head.status else { return (-1, bytes.count) }
            let length = end + 4 + (head.contentLength ?? 0)
            return length <= bytes.count ? (status, length) : nil
        }
        guard let frame else { return nil }
        self.buffer!.moveReaderIndex(forwardBy: frame.length)
        return frame.status
    }
}

/// The few parts of an HTTP/1.1 message head the benchmark reads.
struct HTTPHead {
    let text: Substring

    init(bytes: UnsafeRawBufferPointer) {
        text = Substring(String(decoding: bytes, as: UTF8.self))
    }

    /// The offset of the blank line (`\r\n\r\n`) that ends the head.
    static func end(of bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 0...(bytes.count - 4)
        where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
            return index
        }
        return nil
    }

    /// The status code of a response head.
    var status: Int? {
        let parts = text.split(separator: " ", maxSplits: 2)
        return parts.count >= 2 ? Int(parts[1]) : nil
    }

    var contentLength: Int? {
        for line in text.split(separator: "\r\n") {
            guard let colon = line.firstIndex(of: ":"), line[..<colon].lowercased() == "content-length" else { continue }
            return Int(line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}
