import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import PluginKit

/// `hookproxy destinations`: each destination's flow-control state and queue, from the running server's admin API.
struct DestinationsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "destinations",
        abstract:
            "Show each destination's state (healthy, rate_limited, paused, probing, suspended) and queue, from the running server; --pause / --resume one."
    )

    @OptionGroup var options: GlobalOptions

    @Flag(name: .long, help: "Print the admin API's JSON instead of a table.")
    var json = false

    @Option(
        help: "Suspend sending to this destination (a receiver's maintenance) until --resume; recorded in the database, for every instance."
    )
    var pause: String?

    @Option(help: "Resume a destination suspended with --pause; its queue is sent.")
    var resume: String?

    func validate() throws {
        if pause != nil, resume != nil { throw ValidationError("give --pause or --resume, not both") }
    }

    func run() async throws {
        let config = try options.loadConfig()
        let client = AdminClient(server: config.server)
        if let name = pause ?? resume {
            let encoded = name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? name
            _ = try await client.post("/admin/destinations/\(encoded)/\(pause != nil ? "pause" : "resume")")
        }
        let body = try await client.get("/admin/destinations")
        if json {
            print(body.serialized())
            return
        }
        let destinations = body["destinations"]?.arrayValue ?? []
        let rows =
            [["NAME", "STATE", "IN FLIGHT", "PENDING", "RETRYING", "DEAD", "FAILURES", "PAUSED UNTIL", "RATE LIMITED UNTIL"]]
            + destinations.map { destination in
                let queue = destination["queue"]
                return [
                    destination["name"]?.textValue ?? "", destination["state"]?.textValue ?? "", destination["in_flight"]?.textValue ?? "",
                    queue?["pending"]?.textValue ?? "", queue?["retrying"]?.textValue ?? "", queue?["dead"]?.textValue ?? "",
                    destination["consecutive_failures"]?.textValue ?? "", destination["paused_until"]?.textValue ?? "-",
                    destination["rate_limited_until"]?.textValue ?? "-",
                ].map { $0.isEmpty ? "-" : $0 }
            }
        print(TextTable.render(rows))
    }
}

/// Talks to a running server's admin listener, with the configured bearer token.
struct AdminClient {
    let server: ServerConfig

    /// The admin API's base URL; a wildcard listen address is reached on loopback.
    var baseURL: String {
        let host = ["0.0.0.0", "::", ""].contains(server.adminListen.host) ? "127.0.0.1" : server.adminListen.host
        return host.contains(":") ? "http://[\(host)]:\(server.adminListen.port)" : "http://\(host):\(server.adminListen.port)"
    }

    func get(_ path: String) async throws -> JSONValue { try await call(.GET, path) }

    func post(_ path: String) async throws -> JSONValue { try await call(.POST, path) }

    private func call(_ method: HTTPMethod, _ path: String) async throws -> JSONValue {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let token = server.adminToken { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        // State-changing admin requests must say JSON (the admin API's guard against cross-origin form posts).
        if method == .POST { request.headers.add(name: "Content-Type", value: "application/json") }
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let answer: Result<(status: HTTPResponseStatus, bytes: ByteBuffer), any Error>
        do {
            let response = try await client.execute(request, timeout: .seconds(30))
            answer = .success((response.status, try await response.body.collect(upTo: 16 << 20)))
        } catch {
            answer = .failure(error)
        }
        try? await client.shutdown()
        let status: HTTPResponseStatus
        let bytes: ByteBuffer
        switch answer {
        case .success(let value): (status, bytes) = value
        case .failure(let error):
            throw CLIFailure.runtime("cannot reach the admin API at \(baseURL) (is hookproxy serve running?): \(error)")
        }
        let body = try? JSONValue(parsing: Array(bytes.readableBytesView))
        guard status == .ok, let body else {
            let detail = body?["detail"]?.textValue ?? String(decoding: bytes.readableBytesView, as: UTF8.self)
            throw CLIFailure.runtime("the admin API answered \(status.code): \(detail)")
        }
        return body
    }
}
