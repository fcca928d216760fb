import Hummingbird
import Logging
import NIOCore
import PluginKit

/// The ingest listener's routes: `POST /webhooks/{source}`.
enum IngestRoutes {
    static func router(ingestor: Ingestor, limits: IngestLimits, counters: IngestCounters, logger: Logger)
        -> Router<HookproxyRequestContext>
    {
        let router = Router(context: HookproxyRequestContext.self)
        router.add(middleware: RequestIDMiddleware(logger: logger))
        router.post("/webhooks/:source") { request, context -> Response in
            let server = ingestor.runtime.runtime.config.server
            guard limits.enter(maximum: server.maxConcurrentRequests) else { throw APIError.overloaded() }
            defer { limits.leave() }
            let source = try context.parameters.require("source")
            let limit = server.maxBodyBytes
            if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit {
                throw APIError.bodyTooLarge(limit: limit)
            }
            // Unknown and rate-limited sources are answered before the body is read.
            guard let sourceConfig = ingestor.runtime.runtime.config.sources[source] else { throw APIError.unknownSource(source) }
            do {
                let response = try await accept(
                    request, context: context, source: source, sourceConfig: sourceConfig, ingestor: ingestor, limits: limits)
                counters.count(source: source, outcome: response.status == .accepted ? "accepted" : "duplicate")
                return response
            } catch let error as APIError {
                counters.count(source: source, outcome: IngestCounters.outcome(for: error))
                throw error
            }
        }
        return router
    }

    /// The rest of an ingest request once its source is known: rate limit, body, then the ingest data path.
    static func accept(
        _ request: Request, context: HookproxyRequestContext, source: String, sourceConfig: SourceConfig, ingestor: Ingestor,
        limits: IngestLimits
    ) async throws -> Response {
        let server = ingestor.runtime.runtime.config.server
        if let rateLimit = sourceConfig.rateLimit, let retryAfter = limits.admit(source: source, limit: rateLimit) {
            throw APIError.rateLimited(source: source, retryAfter: max(1, retryAfter))
        }
        let buffer = try await readBody(request, limit: server.maxBodyBytes, timeout: server.readTimeout)
        let headers = request.headers.map { (name: $0.name.canonicalName, value: $0.value) }
        let accepted = try await ingestor.ingest(
            source: source, headers: headers, body: Array(buffer.readableBytesView),
            contentType: request.headers[.contentType] ?? "", requestID: context.requestID)
        let body: JSONValue = ["id": .string(accepted.id), "status": accepted.duplicate ? "duplicate" : "accepted"]
        return try JSONResponse(status: accepted.duplicate ? .ok : .accepted, body: body).response(from: request, context: context)
    }

    /// Collects the body, refusing more than `limit` bytes (413, checked as it streams in) and a body that takes longer
    /// than `timeout` to arrive (408), so a slow client cannot hold a request open forever.
    static func readBody(_ request: Request, limit: Int, timeout: Duration) async throws -> ByteBuffer {
        try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask {
                do {
                    return try await request.body.collect(upTo: limit)
                } catch is NIOTooManyBytesError {
                    throw APIError.bodyTooLarge(limit: limit)
                } catch is CancellationError {
                    throw CancellationError()
                } catch {
                    // The HTTP framing itself is broken (bad chunk sizes, a connection cut mid-body): the client's fault.
                    throw APIError.invalidBody("the request body could not be read: its HTTP framing is malformed or incomplete")
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let buffer = first else { throw APIError.requestTimeout(timeout) }
            return buffer
        }
    }
}
