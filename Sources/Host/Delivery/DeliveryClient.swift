import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// The HTTP/1.1 client deliveries are sent with (decisions §44): one exchange is one flush of the whole request (head
/// and body in one `writev`) and one read of the answer, on a kept-alive connection from a pool per scheme, host and
/// port. It replaces AsyncHTTPClient on the delivery path, where that client flushed the head and the body apart,
/// handed the body over from a task of its own, and parsed the URL again for every request: about a quarter of a
/// delivery's CPU.
///
/// Everything it reads is the receiver's and hostile: the answer's head goes through NIO's HTTP/1.1 parser with its
/// size limits, at most `readLimit` bytes of the body are kept (a longer body ends the exchange and closes the
/// connection), and every exchange ends at its deadline whatever the receiver does. Redirects are not followed.
final class DeliveryClient: Sendable {
    /// What the receiver answered.
    struct Response: Sendable {
        var status: Int
        var headers: [(String, String)]
        /// At most the `readLimit` of the exchange.
        var body: [UInt8]
    }

    /// Why no answer came. Never carries the URL (it may hold a token).
    enum Failure: Error, CustomStringConvertible, Equatable {
        case timedOut
        case connectTimedOut
        /// The receiver closed the connection before its answer was complete.
        case closed
        case invalidURL
        case connect(String)
        case tls(String)
        case invalidAnswer(String)
        case shutDown

        var description: String {
            switch self {
            case .timedOut: "timed out"
            case .connectTimedOut: "connect timed out"
            case .closed: "the destination closed the connection"
            case .invalidURL: "the destination URL is not an http:// or https:// URL with a host"
            case .connect(let reason): "cannot connect: \(reason)"
            case .tls(let reason): "TLS: \(reason)"
            case .invalidAnswer(let reason): "invalid HTTP answer: \(reason)"
            case .shutDown: "the server is shutting down"
            }
        }
    }

    struct Configuration: Sendable {
        var connectTimeout: Duration = .seconds(10)
        /// A kept-alive connection unused this long is closed.
        var idleTimeout: Duration = .seconds(60)
        /// Kept-alive connections kept per scheme, host and port; more are closed when their exchange ends.
        var maxIdlePerHost = 64
        /// Trust and protocol settings of https:// connections: the system's trust roots by default.
        var tls: TLSConfiguration = .makeClientConfiguration()
    }

    private let group: any EventLoopGroup
    private let configuration: Configuration
    private let idle = Mutex<[Endpoint.Key: [Connection]]>([:])
    private let endpoints = Mutex<[String: Endpoint]>([:])
    private let tlsContext = Mutex<Result<NIOSSLContext, Failure>?>(nil)
    private let isShutDown = Atomic<Bool>(false)

    init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, configuration: Configuration = Configuration()) {
        self.group = group
        self.configuration = configuration
    }

    /// Sends one POST of `body` with `headers` to `url` and returns the answer, or throws a ``Failure`` (or
    /// `CancellationError` when the calling task is cancelled). `Host` and `Content-Length` are the client's.
    func post(
        _ url: String, headers: HTTPHeaders, body: [UInt8], deadline: ContinuousClock.Instant, readLimit: Int
    ) async throws -> Response {
        guard !isShutDown.load(ordering: .relaxed) else { throw Failure.shutDown }
        guard let endpoint = endpoint(url) else { throw Failure.invalidURL }
        // The framing is the client's: a header from the configuration or a plugin cannot contradict it.
        var fields = headers
        for name in ["Host", "Content-Length", "Transfer-Encoding", "Connection"] { fields.remove(name: name) }
        if let authorization = endpoint.authorization, !fields.contains(name: "Authorization") {
            fields.add(name: "Authorization", value: authorization)
        }
        fields.add(name: "Host", value: endpoint.hostHeader)
        fields.add(name: "Content-Length", value: String(body.count))
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: endpoint.target, headers: fields)
        let nioDeadline = NIODeadline.now() + TimeAmount(ContinuousClock.now.duration(to: deadline))
        let exchange = Exchange(head: head, body: ByteBuffer(bytes: body), deadline: nioDeadline, readLimit: max(0, readLimit))
        var mayUseKept = true
        while true {
            let (connection, wasKept) = try await acquire(endpoint, deadline: deadline, mayUseKept: mayUseKept)
            do {
                let response = try await connection.exchange(exchange)
                if response.reusable { park(connection, key: endpoint.key) }
                return response.response
            } catch let stale as ExchangeHandler.Stale {
                // A kept-alive connection the receiver closed while it waited in the pool (nothing was sent on it):
                // the request goes on a new connection, once. A new connection closed before the exchange began (its
                // TLS handshake failed, say) fails with the reason.
                guard wasKept else { throw stale.cause ?? Failure.closed }
                mayUseKept = false
            }
        }
    }

    /// How many connections to `url`'s scheme, host and port wait in the pool and are still open.
    func keptConnections(to url: String) -> Int {
        guard let key = endpoint(url)?.key else { return 0 }
        return idle.withLock { idle in idle[key]?.count(where: { $0.channel.isActive }) ?? 0 }
    }

    /// Closes the kept-alive connections; later sends fail with ``Failure/shutDown``.
    func shutdown() async {
        isShutDown.store(true, ordering: .relaxed)
        let connections = idle.withLock { idle in
            defer { idle.removeAll() }
            return idle.values.flatMap { $0 }
        }
        for connection in connections { try? await connection.channel.close() }
    }

    // MARK: Endpoints

    /// A destination URL, parsed once.
    struct Endpoint: Sendable {
        struct Key: Hashable, Sendable {
            var tls: Bool
            var host: String
            var port: Int
        }
        var key: Key
        /// The request target: path and query, as written in the URL.
        var target: String
        var hostHeader: String
        /// The TLS server name (SNI): the host, unless it is an IP address.
        var serverName: String?
        /// Basic credentials written in the URL (`https://user:password@host/`).
        var authorization: String?

        init?(_ url: String) {
            guard let parsed = URL(string: url), let scheme = parsed.scheme?.lowercased(), scheme == "http" || scheme == "https",
                var host = parsed.host(percentEncoded: false), !host.isEmpty
            else { return nil }
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            let tls = scheme == "https"
            let defaultPort = tls ? 443 : 80
            let port = parsed.port ?? defaultPort
            guard (1...65535).contains(port) else { return nil }
            key = Key(tls: tls, host: host, port: port)
            let path = parsed.path(percentEncoded: true)
            target = (path.isEmpty ? "/" : path) + (parsed.query(percentEncoded: true).map { "?" + $0 } ?? "")
            let isIPv6 = host.contains(":")
            let shownHost = isIPv6 ? "[\(host)]" : host
            hostHeader = port == defaultPort ? shownHost : "\(shownHost):\(port)"
            let isIPAddress = isIPv6 || host.allSatisfy { $0.isNumber || $0 == "." }
            serverName = isIPAddress ? nil : host
            if let user = parsed.user(percentEncoded: false) {
                let credentials = user + ":" + (parsed.password(percentEncoded: false) ?? "")
                authorization = "Basic " + Data(credentials.utf8).base64EncodedString()
            }
        }
    }

    private func endpoint(_ url: String) -> Endpoint? {
        if let known = endpoints.withLock({ $0[url] }) { return known }
        guard let endpoint = Endpoint(url) else { return nil }
        endpoints.withLock { endpoints in
            // Destinations come from the configuration; a reload may change them, so the cache is bounded.
            if endpoints.count >= 1024 { endpoints.removeAll() }
            endpoints[url] = endpoint
        }
        return endpoint
    }

    // MARK: Connections

    /// A connection and the handler that runs its exchanges (on the channel's event loop).
    private struct Connection: Sendable {
        let channel: any Channel
        let handler: NIOLoopBound<ExchangeHandler>

        func exchange(_ exchange: Exchange) async throws -> ExchangeHandler.Finished {
            let promise = channel.eventLoop.makePromise(of: ExchangeHandler.Finished.self)
            let handler = self.handler
            channel.eventLoop.execute { handler.value.start(exchange, promise: promise) }
            return try await withTaskCancellationHandler {
                try await promise.futureResult.get()
            } onCancel: {
                // Runs later on the loop: by then this exchange may be over and the connection carrying another.
                channel.eventLoop.execute { handler.value.cancel(promise) }
            }
        }
    }

    /// A kept-alive connection to `endpoint` (when `mayUseKept`) or a new one, and whether it was kept.
    private func acquire(
        _ endpoint: Endpoint, deadline: ContinuousClock.Instant, mayUseKept: Bool
    ) async throws -> (Connection, wasKept: Bool) {
        while mayUseKept, let connection = idle.withLock({ $0[endpoint.key]?.popLast() }) {
            if connection.channel.isActive { return (connection, true) }
        }
        try Task.checkCancellation()
        let remaining = ContinuousClock.now.duration(to: deadline)
        guard remaining > .zero else { throw Failure.timedOut }
        let limitedByDeadline = remaining < configuration.connectTimeout
        let context: NIOSSLContext? = endpoint.key.tls ? try tlsContextOrFail() : nil
        let made = Mutex<NIOLoopBound<ExchangeHandler>?>(nil)
        let idleTimeout = TimeAmount(configuration.idleTimeout)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(TimeAmount(min(remaining, configuration.connectTimeout)))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                do {
                    if let context {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: context, serverHostname: endpoint.serverName))
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    let handler = ExchangeHandler(idleTimeout: idleTimeout)
                    try channel.pipeline.syncOperations.addHandler(handler)
                    made.withLock { $0 = NIOLoopBound(handler, eventLoop: channel.eventLoop) }
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: endpoint.key.host, port: endpoint.key.port).get()
        } catch ChannelError.connectTimeout {
            throw limitedByDeadline ? Failure.timedOut : Failure.connectTimedOut
        } catch {
            throw Failure.connect(Self.describeConnectError(error))
        }
        guard let handler = made.withLock({ $0 }) else {
            channel.close(promise: nil)
            throw Failure.connect("the connection was not set up")
        }
        return (Connection(channel: channel, handler: handler), false)
    }

    /// Keeps `connection` for the next exchange with its host, unless enough are kept already.
    private func park(_ connection: Connection, key: Endpoint.Key) {
        let kept = idle.withLock { idle -> Bool in
            guard !isShutDown.load(ordering: .relaxed) else { return false }
            // Closed ones are dropped when the list is full (and skipped when taken), not looked at on every return.
            if idle[key, default: []].count >= configuration.maxIdlePerHost { idle[key]?.removeAll { !$0.channel.isActive } }
            guard idle[key, default: []].count < configuration.maxIdlePerHost else { return false }
            idle[key, default: []].append(connection)
            return true
        }
        if !kept { connection.channel.close(promise: nil) }
    }

    private func tlsContextOrFail() throws(Failure) -> NIOSSLContext {
        let result = tlsContext.withLock { cached -> Result<NIOSSLContext, Failure> in
            if let cached { return cached }
            let made: Result<NIOSSLContext, Failure>
            do {
                made = .success(try NIOSSLContext(configuration: configuration.tls))
            } catch {
                made = .failure(.tls("cannot set up TLS: \(error)"))
            }
            cached = made
            return made
        }
        return try result.get()
    }

    /// "connection refused", "the host name does not resolve": the system's words for a socket error, without NIO's
    /// wrapping ("connection reset (error set): Connection refused (errno: 111)").
    static func describeConnectError(_ error: any Error) -> String {
        var error = error
        if let connection = error as? NIOConnectionError {
            if connection.dnsAAAAError != nil, connection.dnsAError != nil { return "the host name does not resolve" }
            guard let first = connection.connectionErrors.first else { return "no address to connect to" }
            error = first.error
        }
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)).lowercased() }
        return "\(error)"
    }
}

/// One request to send on a connection.
private struct Exchange: Sendable {
    var head: HTTPRequestHead
    var body: ByteBuffer
    var deadline: NIODeadline
    var readLimit: Int
}

/// Runs one exchange at a time on its connection: writes the request in one flush, reads the answer, and ends the
/// exchange at its deadline. Between exchanges the connection waits in the pool, and closes after the idle timeout.
private final class ExchangeHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    /// An answer, and whether its connection may carry another exchange.
    struct Finished: Sendable {
        var response: DeliveryClient.Response
        var reusable: Bool
    }

    private let idleTimeout: TimeAmount
    private var context: ChannelHandlerContext?
    private var promise: EventLoopPromise<Finished>?
    private var head: HTTPResponseHead?
    private var body: [UInt8] = []
    private var readLimit = 0
    private var timeout: Scheduled<Void>?
    private var idleClose: Scheduled<Void>?

    init(idleTimeout: TimeAmount) {
        self.idleTimeout = idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        fail(DeliveryClient.Failure.closed)
        self.context = nil
    }

    /// The connection was closed before the exchange wrote anything on it.
    struct Stale: Error {
        /// Why, when an error closed it.
        var cause: (any Error)?
    }

    /// The error that closed the connection while no exchange was running on it.
    private var closedBy: (any Error)?

    func start(_ exchange: Exchange, promise: EventLoopPromise<Finished>) {
        guard let context, context.channel.isActive, self.promise == nil else {
            promise.fail(Stale(cause: closedBy))
            return
        }
        idleClose?.cancel()
        idleClose = nil
        self.promise = promise
        head = nil
        body = []
        readLimit = exchange.readLimit
        timeout = context.eventLoop.assumeIsolated().scheduleTask(deadline: exchange.deadline) { [weak self] in
            self?.fail(DeliveryClient.Failure.timedOut)
        }
        context.write(wrapOutboundOut(.head(exchange.head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(exchange.body))), promise: nil)
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.assumeIsolated().whenFailure { [weak self] error in self?.fail(Self.failure(error)) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
    }

    /// The task of the exchange answered through `promise` was cancelled; nothing happens if that exchange is over.
    func cancel(_ promise: EventLoopPromise<Finished>) {
        guard self.promise?.futureResult === promise.futureResult else { return }
        fail(CancellationError())
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard promise != nil else {
            // Bytes nobody asked for, on a connection waiting in the pool: it cannot be trusted with another request.
            context.close(promise: nil)
            return
        }
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body(let buffer):
            let room = readLimit - body.count
            if buffer.readableBytes > room {
                // More than is kept: the answer is read no further, and its connection cannot be reused.
                body += buffer.readableBytesView.prefix(max(0, room))
                finish(reusable: false)
            } else {
                body += buffer.readableBytesView
            }
        case .end:
            finish(reusable: head?.isKeepAlive ?? false)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(DeliveryClient.Failure.closed)
        idleClose?.cancel()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if promise == nil, closedBy == nil { closedBy = Self.failure(error) }
        fail(Self.failure(error))
        context.close(promise: nil)
    }

    private func finish(reusable: Bool) {
        guard let promise, let head else {
            fail(DeliveryClient.Failure.invalidAnswer("no status line"))
            return
        }
        self.promise = nil
        timeout?.cancel()
        timeout = nil
        let response = DeliveryClient.Response(
            status: Int(head.status.code), headers: head.headers.map { ($0.name, $0.value) }, body: body)
        body = []
        self.head = nil
        if reusable, let context {
            idleClose = context.eventLoop.assumeIsolated().scheduleTask(in: idleTimeout) { [weak self] in self?.context?.close(promise: nil)
            }
        } else {
            context?.close(promise: nil)
        }
        promise.succeed(Finished(response: response, reusable: reusable))
    }

    private func fail(_ error: any Error) {
        guard let promise else { return }
        self.promise = nil
        timeout?.cancel()
        timeout = nil
        body = []
        head = nil
        context?.close(promise: nil)
        promise.fail(error)
    }

    private static func failure(_ error: any Error) -> any Error {
        if let failure = error as? DeliveryClient.Failure { return failure }
        if error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError { return DeliveryClient.Failure.tls("\(error)") }
        // The connection ended in the middle of an answer (a body shorter than its Content-Length, say).
        if let error = error as? HTTPParserError, error == .invalidEOFState { return DeliveryClient.Failure.closed }
        if let error = error as? HTTPParserError { return DeliveryClient.Failure.invalidAnswer("\(error)") }
        if let error = error as? ChannelError, error == .ioOnClosedChannel || error == .eof { return DeliveryClient.Failure.closed }
        if error is IOError { return DeliveryClient.Failure.closed }
        return DeliveryClient.Failure.invalidAnswer("\(error)")
    }
}
