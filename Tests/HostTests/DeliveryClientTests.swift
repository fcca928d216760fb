import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import Testing

@testable import Host

/// The delivery path's own HTTP/1.1 client against a real receiver on loopback that answers as scripted, including the
/// ways a hostile or broken receiver answers.
@Suite("Delivery client")
struct DeliveryClientTests {
    static let body = Array(repeating: UInt8(ascii: "a"), count: 1024)

    static func headers(_ pairs: [(String, String)] = []) -> HTTPHeaders {
        HTTPHeaders([("Content-Type", "application/json")] + pairs)
    }

    static func post(
        _ client: DeliveryClient, _ url: String, headers: HTTPHeaders = headers(), timeout: Duration = .seconds(10),
        readLimit: Int = 4096
    ) async throws -> DeliveryClient.Response {
        try await client.post(url, headers: headers, body: body, deadline: .now + timeout, readLimit: readLimit)
    }

    /// The failure `body` threw, or nil when it did not.
    static func failure(_ body: () async throws -> DeliveryClient.Response) async -> DeliveryClient.Failure? {
        do {
            _ = try await body()
            return nil
        } catch let failure as DeliveryClient.Failure {
            return failure
        } catch {
            Issue.record("not a DeliveryClient.Failure: \(error)")
            return nil
        }
    }

    @Test("a request is one write with Host and Content-Length; answers are read; kept-alive connections are reused")
    func keepAlive() async throws {
        let receiver = ScriptedReceiver()
        try await receiver.start()
        let client = DeliveryClient()
        let url = "http://user:p%40ss@127.0.0.1:\(receiver.port)/hook/path?token=a%2Fb&x=1"
        for _ in 0..<10 {
            let response = try await Self.post(
                client, url, headers: Self.headers([("X-Extra", "1"), ("Content-Length", "5"), ("Transfer-Encoding", "chunked")]))
            #expect(response.status == 200)
            #expect(response.body == Array("ok".utf8))
        }
        let received = receiver.received
        #expect(received.count == 10)
        #expect(receiver.connections == 1, "ten requests on one kept-alive connection")
        let first = try #require(received.first)
        #expect(first.head.hasPrefix("POST /hook/path?token=a%2Fb&x=1 HTTP/1.1\r\n"))
        #expect(first.header("Host") == "127.0.0.1:\(receiver.port)")
        #expect(first.header("Content-Length") == "1024", "the client's framing, not a header from the configuration")
        #expect(first.header("Transfer-Encoding") == nil)
        #expect(first.header("X-Extra") == "1")
        #expect(first.header("Authorization") == "Basic " + Data("user:p@ss".utf8).base64EncodedString())
        #expect(first.body == Self.body)
        // Head and body leave in one flush: on loopback the receiver reads each request whole in one read.
        #expect(received.filter { $0.reads == 1 }.count >= 9, "reads per request: \(received.map(\.reads))")
        await client.shutdown()
        try await receiver.stop()
    }

    @Test("Connection: close, an HTTP/1.0 answer and a connection closed while kept alive each lead to a new connection")
    func connectionsNotReused() async throws {
        let receiver = ScriptedReceiver()
        receiver.script { index in
            switch index {
            case 0: .bytes("HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            case 1: .bytes("HTTP/1.0 202 Accepted\r\nContent-Length: 0\r\n\r\n")
            // Answered and then closed by the receiver while the client keeps the connection for later.
            case 2: .bytesThenClose("HTTP/1.1 204 No Content\r\n\r\n")
            default: .bytes(ScriptedReceiver.ok)
            }
        }
        try await receiver.start()
        let client = DeliveryClient()
        let url = "http://127.0.0.1:\(receiver.port)/"
        #expect(try await Self.post(client, url).status == 201)
        #expect(try await Self.post(client, url).status == 202)
        #expect(try await Self.post(client, url).status == 204)
        try await waitUntil("the client saw the receiver close the kept connection") { client.keptConnections(to: url) == 0 }
        #expect(try await Self.post(client, url).status == 200, "the closed connection is not used")
        #expect(receiver.connections == 4)
        #expect(receiver.received.count == 4, "each request sent once")
        await client.shutdown()
        try await receiver.stop()
    }

    @Test("an endless answer is read up to the limit and its connection closed; a silent one ends at the deadline")
    func hostileAnswers() async throws {
        let receiver = ScriptedReceiver()
        receiver.script { index in index == 0 ? .endlessBody : .silence }
        try await receiver.start()
        let client = DeliveryClient()
        let url = "http://127.0.0.1:\(receiver.port)/"
        let clock = ContinuousClock()
        let start = clock.now
        let endless = try await Self.post(client, url, timeout: .seconds(20), readLimit: 10_000)
        #expect(endless.status == 200)
        #expect(endless.body.count == 10_000)
        #expect(clock.now - start < .seconds(10), "returned once the limit was read, not at the deadline")

        let silentStart = clock.now
        #expect(await Self.failure { try await Self.post(client, url, timeout: .milliseconds(500)) } == .timedOut)
        let waited = clock.now - silentStart
        #expect(waited >= .milliseconds(450) && waited < .seconds(10), "waited \(waited)")
        #expect(receiver.connections == 2)
        await client.shutdown()
        try await receiver.stop()
    }

    @Test("a closed connection, a malformed answer, a refused connection and a bad URL are failures with their reason")
    func failures() async throws {
        let receiver = ScriptedReceiver()
        receiver.script { index in
            switch index {
            case 0: .close
            case 1: .bytes("HTTP/1.1 abc\r\n\r\n")
            case 2: .bytesThenClose("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
            default: .bytes(ScriptedReceiver.ok)
            }
        }
        try await receiver.start()
        let client = DeliveryClient()
        let url = "http://127.0.0.1:\(receiver.port)/"
        #expect(await Self.failure { try await Self.post(client, url) } == .closed)
        let malformed = await Self.failure { try await Self.post(client, url) }
        if case .invalidAnswer = malformed {} else { Issue.record("a malformed status line: \(String(describing: malformed))") }
        #expect(await Self.failure { try await Self.post(client, url) } == .closed, "a body cut short")
        #expect(try await Self.post(client, url).status == 200, "the client goes on")

        // A port nobody listens on (the receiver's, once it has stopped), from a client with no connection kept to it.
        let port = receiver.port
        try await receiver.stop()
        let fresh = DeliveryClient()
        let refused = await Self.failure { try await Self.post(fresh, "http://127.0.0.1:\(port)/") }
        await fresh.shutdown()
        if case .connect(let reason) = refused {
            #expect(reason == "connection refused", "\(reason)")
        } else {
            Issue.record("a refused connection: \(String(describing: refused))")
        }
        #expect(await Self.failure { try await Self.post(client, "ftp://127.0.0.1/") } == .invalidURL)
        await client.shutdown()
        #expect(await Self.failure { try await Self.post(client, url) } == .shutDown)
    }

    @Test("a send is cancelled with its task, at once")
    func cancellation() async throws {
        let receiver = ScriptedReceiver()
        receiver.script { _ in .silence }
        try await receiver.start()
        let client = DeliveryClient()
        let url = "http://127.0.0.1:\(receiver.port)/"
        let task = Task { try await Self.post(client, url, timeout: .seconds(60)) }
        try await waitUntil("the request arrived") { receiver.received.count == 1 }
        let clock = ContinuousClock()
        let start = clock.now
        task.cancel()
        let result = await task.result
        #expect(clock.now - start < .seconds(5))
        if case .failure(let error) = result { #expect(error is CancellationError, "\(error)") } else { Issue.record("not cancelled") }
        await client.shutdown()
        try await receiver.stop()
    }

    @Test("https: the certificate is checked against the trust roots and the host name")
    func tls() async throws {
        let directory = PostgresTLSTests.directory
        let ca = directory + "/ca.pem"
        try #require(
            FileManager.default.fileExists(atPath: directory + "/server.key"),
            "no test certificates at \(directory): run the PostgreSQL part of .ci/run (it makes them)")
        let server = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(directory + "/server.crt").map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: directory + "/server.key", format: .pem)))
        let receiver = ScriptedReceiver(tls: try NIOSSLContext(configuration: server))
        try await receiver.start()
        var trusting = DeliveryClient.Configuration()
        trusting.tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
        let client = DeliveryClient(configuration: trusting)
        // The certificate names localhost.
        for _ in 0..<3 { #expect(try await Self.post(client, "https://localhost:\(receiver.port)/tls").status == 200) }
        #expect(receiver.connections == 1)
        #expect(receiver.received.first?.header("Host") == "localhost:\(receiver.port)")
        // Not 127.0.0.1, which the certificate does not name.
        let wrongName = await Self.failure { try await Self.post(client, "https://127.0.0.1:\(receiver.port)/tls") }
        if case .tls = wrongName {} else { Issue.record("a certificate for another name: \(String(describing: wrongName))") }
        // The system's trust roots do not include the test CA.
        let untrusting = DeliveryClient()
        let untrusted = await Self.failure { try await Self.post(untrusting, "https://localhost:\(receiver.port)/tls") }
        if case .tls = untrusted {} else { Issue.record("an untrusted certificate: \(String(describing: untrusted))") }
        #expect(receiver.received.count == 3, "nothing is sent before the certificate is accepted")
        #expect(receiver.connections == 3, "one connection per refused certificate: a failed handshake is not tried again")
        await client.shutdown()
        await untrusting.shutdown()
        try await receiver.stop()
    }
}
