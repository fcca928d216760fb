import Hummingbird
import Logging
import NIOCore
import PluginKit

/// The ingest listener's routes: `POST /webhooks/{source}`.
enum IngestRoutes {
    static func router(ingestor: Ingestor, logger: Logger) -> Router<HookproxyRequestContext> {
        let router = Router(context: HookproxyRequestContext.self)
        router.add(middleware: RequestIDMiddleware(logger: logger))
        router.post("/webhooks/:source") { request, context -> Response in
            let source = try context.parameters.require("source")
            let limit = ingestor.runtime.runtime.config.server.maxBodyBytes
            if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit {
                throw APIError.bodyTooLarge(limit: limit)
            }
            // Unknown sources are answered before the body is read.
            guard ingestor.runtime.runtime.config.sources[source] != nil else { throw APIError.unknownSource(source) }
            let buffer: ByteBuffer
            do {
                buffer = try await request.body.collect(upTo: limit)
            } catch is NIOTooManyBytesError {
                throw APIError.bodyTooLarge(limit: limit)
            }
            let headers = request.headers.map { (name: $0.name.canonicalName, value: $0.value) }
            let accepted = try await ingestor.ingest(
                source: source, headers: headers, body: Array(buffer.readableBytesView),
                contentType: request.headers[.contentType] ?? "", requestID: context.requestID)
            let body: JSONValue = ["id": .string(accepted.id), "status": accepted.duplicate ? "duplicate" : "accepted"]
            return try JSONResponse(status: accepted.duplicate ? .ok : .accepted, body: body).response(from: request, context: context)
        }
        return router
    }
}
