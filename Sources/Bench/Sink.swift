import NIOCore
import NIOHTTP1
import NIOPosix

/// The receiving end on loopback: answers every request 204 at once and notes when each numbered event arrived.
///
/// Bodies carry the event's number after the marker `hpseq:` (the benchmark's Discord title), so the end-to-end latency
/// of each event is its arrival here minus its intended send time at the load generator (the same monotonic clock).
final class Sink: @unchecked Sendable {
    /// Confined to `loop`.
    private var arrivals: [UInt64] = []
    private var received = 0
    private var duplicates = 0
    private var unnumbered = 0
    private let loop: any EventLoop
    private(set) var port = 0
    private var channel: (any Channel)?

    init(group: any EventLoopGroup) {
        loop = group.next()
    }

    func start() async throws {
        let channel = try await ServerBootstrap(group: loop)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(SinkHandler(sink: self))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        self.channel = channel
        port = channel.localAddress?.port ?? 0
    }

    func stop() async {
        try? await channel?.close()
    }

    /// Forgets what arrived and expects events numbered `0..<count`.
    func reset(expecting count: Int) async throws {
        try await loop.submit { [self] in
            arrivals = Array(repeating: 0, count: count)
            received = 0
            duplicates = 0
            unnumbered = 0
        }.get()
    }

    struct Counts: Sendable {
        var received: Int
        var duplicates: Int
        var unnumbered: Int
    }

    func counts() async throws -> Counts {
        try await loop.submit { [self] in Counts(received: received, duplicates: duplicates, unnumbered: unnumbered) }.get()
    }

    /// Arrival times (monotonic nanoseconds) by event number; 0 where nothing arrived.
    func arrivalTimes() async throws -> [UInt64] {
        try await loop.submit { [self] in arrivals }.get()
    }

    /// Called on `loop` with each complete request body.
    fileprivate func arrived(body: ByteBuffer?) {
        received += 1
        guard let number = body.flatMap(Self.number(in:)), number < arrivals.count else {
            unnumbered += 1
            return
        }
        if arrivals[number] != 0 {
            duplicates += 1
        } else {
            arrivals[number] = NIODeadline.now().uptimeNanoseconds
        }
    }

    private static let marker = Array("hpseq:".utf8)

    /// The digits after the first `hpseq:` in `body`.
    static func number(in body: ByteBuffer) -> Int? {
        body.withUnsafeReadableBytes { bytes -> Int? in
            guard bytes.count > marker.count else { return nil }
            var index = 0
            search: while index + marker.count < bytes.count {
                for offset in 0..<marker.count where bytes[index + offset] != marker[offset] {
                    index += 1
                    continue search
                }
                var position = index + marker.count
                var value = 0
                var digits = 0
                while position < bytes.count, bytes[position] >= 48, bytes[position] <= 57 {
                    value = value * 10 + Int(bytes[position] - 48)
                    digits += 1
                    position += 1
                }
                return digits > 0 ? value : nil
            }
            return nil
        }
    }
}

private final class SinkHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let sink: Sink
    private var body: ByteBuffer?
    private var keepAlive = true

    init(sink: Sink) {
        self.sink = sink
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            body = nil
            keepAlive = head.isKeepAlive
        case .body(var chunk):
            if body == nil { body = chunk } else { body!.writeBuffer(&chunk) }
        case .end:
            sink.arrived(body: body)
            body = nil
            var headers = HTTPHeaders()
            if !keepAlive { headers.add(name: "connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .noContent, headers: headers))), promise: nil)
            let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !keepAlive {
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                written.whenComplete { _ in bound.value.close(promise: nil) }
            }
        }
    }
}
