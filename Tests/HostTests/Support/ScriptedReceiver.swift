import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// A receiver on loopback that answers each request with raw bytes chosen by a script: a well-behaved answer, or one no
/// proper server would send (no answer, a closed connection, an endless body, a malformed status line). It records each
/// request's bytes, the connection it came on and how many reads it took to arrive.
final class ScriptedReceiver: Sendable {
    /// What the receiver does with one request.
    enum Reply: Sendable {
        /// Writes these bytes (and keeps the connection open).
        case bytes(String)
        /// Writes these bytes and closes the connection.
        case bytesThenClose(String)
        /// Never answers.
        case silence
        /// Closes the connection without answering.
        case close
        /// Answers 200 with no length and then writes body bytes until the client goes away.
        case endlessBody
    }

    struct Received: Sendable {
        var connection: Int
        var head: String
        var body: [UInt8]
        /// Reads the request took to arrive in full.
        var reads: Int
        func header(_ name: String) -> String? { Self.header(name, in: head) }

        /// The value of header `name` in a request head (its lines, without the blank line).
        static func header(_ name: String, in head: String) -> String? {
            for line in head.split(separator: "\r\n").dropFirst() {
                let parts = line.split(separator: ":", maxSplits: 1)
                if parts.count == 2, parts[0].lowercased() == name.lowercased() { return parts[1].trimmingCharacters(in: .whitespaces) }
            }
            return nil
        }
    }

    private struct State {
        var script: @Sendable (Int) -> Reply = { _ in .bytes(ScriptedReceiver.ok) }
        var received: [Received] = []
        var connections = 0
    }

    static let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    private let state = Mutex(State())
    private let channel = Mutex<(any Channel)?>(nil)
    private let tls: NIOSSLContext?

    /// Over TLS with `tls` when given.
    init(tls: NIOSSLContext? = nil) {
        self.tls = tls
    }

    /// The reply to the n-th request (from 0).
    func script(_ script: @escaping @Sendable (Int) -> Reply) { state.withLock { $0.script = script } }
    var received: [Received] { state.withLock { $0.received } }
    var connections: Int { state.withLock { $0.connections } }

    var port: Int { channel.withLock { $0?.localAddress?.port ?? 0 } }

    func start() async throws {
        let tls = self.tls
        let bound = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                let number = state.withLock { state in
                    state.connections += 1
                    return state.connections
                }
                do {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.addHandler(ConnectionHandler(receiver: self, connection: number))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        channel.withLock { $0 = bound }
    }

    func stop() async throws {
        try await channel.withLock { $0 }?.close()
    }

    fileprivate func record(_ received: Received) -> Reply {
        state.withLock { state in
            let reply = state.script(state.received.count)
            state.received.append(received)
            return reply
        }
    }
}

/// Reads requests framed by Content-Length off one connection and answers each as scripted.
private final class ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let receiver: ScriptedReceiver
    let connection: Int
    private var buffer: [UInt8] = []
    private var reads = 0
    private var streaming = false

    init(receiver: ScriptedReceiver, connection: Int) {
        self.receiver = receiver
        self.connection = connection
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        buffer += unwrapInboundIn(data).readableBytesView
        reads += 1
        while let end = headEnd() {
            let head = String(decoding: buffer[..<end], as: UTF8.self)
            let length = Int(ScriptedReceiver.Received.header("Content-Length", in: head) ?? "0") ?? 0
            guard buffer.count >= end + 4 + length else { return }
            let body = Array(buffer[(end + 4)..<(end + 4 + length)])
            buffer.removeFirst(end + 4 + length)
            let reply = receiver.record(.init(connection: connection, head: head, body: body, reads: reads))
            reads = 0
            answer(reply, context: context)
        }
    }

    private func headEnd() -> Int? {
        guard buffer.count >= 4 else { return nil }
        for index in 0...(buffer.count - 4)
        where buffer[index] == 13 && buffer[index + 1] == 10 && buffer[index + 2] == 13 && buffer[index + 3] == 10 {
            return index
        }
        return nil
    }

    private func answer(_ reply: ScriptedReceiver.Reply, context: ChannelHandlerContext) {
        switch reply {
        case .bytes(let text):
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: text)), promise: nil)
        case .bytesThenClose(let text):
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: text))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        case .silence:
            break
        case .close:
            context.close(promise: nil)
        case .endlessBody:
            streaming = true
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")), promise: nil)
            stream(context: context)
        }
    }

    /// Writes 16 KiB at a time while the connection is open.
    private func stream(context: ChannelHandlerContext) {
        guard streaming, context.channel.isActive else { return }
        let chunk = ByteBuffer(repeating: UInt8(ascii: "x"), count: 16 * 1024)
        context.writeAndFlush(wrapOutboundOut(chunk)).assumeIsolated().whenComplete { result in
            // On the next tick, not from inside this write's completion: a loopback write can complete at once.
            if case .success = result { context.eventLoop.assumeIsolated().execute { self.stream(context: context) } }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        streaming = false
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
