import Dispatch
import Foundation

@testable import Host

#if canImport(Glibc)
    import Glibc
#endif

/// A bare TCP client on loopback, for playing slow or malformed HTTP senders byte by byte. Blocking socket calls run
/// on Dispatch threads, never on the Swift concurrency pool.
final class RawClient: @unchecked Sendable {
    // The descriptor is written once in init and only read afterwards.
    private let descriptor: Int32

    /// Connects to `port` on 127.0.0.1 from the loopback address `from` (any of 127.0.0.0/8), so that a test can play
    /// several client addresses.
    init(port: Int, from: String = "127.0.0.1") throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr(from)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw TimedOut(what: "a local address \(from) to connect from") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw TimedOut(what: "a connection to port \(port)") }
    }

    /// Sends bytes; returns false when the server has closed the connection.
    @discardableResult
    func send(_ text: String) async -> Bool {
        let bytes = Array(text.utf8)
        let descriptor = self.descriptor
        return await withCheckedContinuation { continuation in
            Thread {
                let sent = bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                continuation.resume(returning: sent == bytes.count)
            }.start()
        }
    }

    /// Reads until the server closes the connection or `timeout` passes; returns what arrived.
    func readAll(timeout: Duration) async -> String {
        let descriptor = self.descriptor
        // A thread of its own: a blocking read on Dispatch's global queue (two threads on two cores) would hold back
        // everything else queued there while it waits.
        return await withCheckedContinuation { continuation in
            Thread {
                let deadline = Date().addingTimeInterval(timeout.seconds)
                var received: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 4096)
                while Date() < deadline {
                    var wait = timeval(tv_sec: 0, tv_usec: 100_000)
                    setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
                    let count = recv(descriptor, &buffer, buffer.count, 0)
                    if count > 0 {
                        received += buffer[0..<count]
                    } else if count == 0 {
                        break
                    }
                }
                continuation.resume(returning: String(decoding: received, as: UTF8.self))
            }.start()
        }
    }

    func close() { _ = Glibc.close(descriptor) }
}

/// One request over a fresh connection from the loopback address `from`; returns the status (0 when nothing came back).
func rawPost(port: Int, from: String, path: String, body: String, headers: [(String, String)] = []) async throws -> Int {
    let client = try RawClient(port: port, from: from)
    defer { client.close() }
    let extra = headers.map { "\($0.0): \($0.1)\r\n" }.joined()
    await client.send(
        "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n"
            + "Connection: close\r\n\(extra)\r\n\(body)")
    // Generous: the first request of a new server on a loaded two-core machine has taken over 10 s.
    let answer = await client.readAll(timeout: .seconds(30))
    guard answer.hasPrefix("HTTP/1.1 "), let code = Int(answer.dropFirst(9).prefix(3)) else { return 0 }
    return code
}
