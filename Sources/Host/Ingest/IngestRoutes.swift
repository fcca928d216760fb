import Hummingbird
import Logging
import NIOCore
import PluginKit

/// The ingest listener's routes: `POST /webhooks/{source}`.
enum IngestRoutes {
    /// `noopRoute` adds `POST /_bench/noop`, the benchmark's ceiling: the same listener, middleware, body read and
    /// answer as ingest, and nothing else (docs/benchmarks.md). It is on only when `HOOKPROXY_BENCH_NOOP_ROUTE=1`.
    static func router(
        ingestor: Ingestor, limits: IngestLimits, counters: IngestCounters, metrics: HookproxyMetrics, logger: Logger,
        noopRoute: Bool = false
    ) -> Router<HookproxyRequestContext> {
        let router = Router(context: HookproxyRequestContext.self)
        router.add(middleware: RequestIDMiddleware(logger: logger))
        if noopRoute {
            router.post("/_bench/noop") { request, context -> Response in
                let server = ingestor.runtime.runtime.config.server
                _ = try await readBody(request, limit: server.maxBodyBytes, timeout: server.readTimeout)
                let body: JSONValue = ["id": "01a20019-a924-731c-8893-53404d8a8a31", "status": "accepted"]
                return try JSONResponse(status: .accepted, body: body).response(from: request, context: context)
            }
        }
        router.post("/webhooks/:source") { request, context -> Response in
            // One snapshot of the configuration for the whole request: a reload never changes it halfway.
            let runtime = ingestor.runtime.runtime
            let server = runtime.config.server
            guard limits.enter(maximum: server.maxConcurrentRequests) else {
                metrics.increment("hookproxy_ingest_requests_shed_total")
                throw APIError.overloaded()
            }
            defer { limits.leave() }
            let forwarded = request.headers[values: .xForwardedFor]
            let client = ClientAddress.key(peer: context.channel.remoteAddress, forwardedFor: forwarded, trusted: server.trustedProxies)
            if !forwarded.isEmpty, server.trustedProxies.isEmpty, limits.firstUntrustedForwarding() {
                logger.warning(
                    """
                    requests arrive with X-Forwarded-For, but server.trusted_proxies is empty: every client behind that proxy \
                    shares one address's max_concurrent_per_client and rate_limit_unverified
                    """,
                    metadata: ["peer": "\(client)"])
            }
            guard limits.enter(client: client, maximum: server.maxConcurrentPerClient) else {
                metrics.increment("hookproxy_ingest_client_shed_total")
                throw APIError.overloaded(client: true)
            }
            defer { limits.leave(client: client) }
            let source = try context.parameters.require("source")
            // Only configured names become label values: unknown ones would let any client grow the metrics without bound.
            let sourceConfig = runtime.config.sources[source]
            do {
                let response = try await handle(
                    request, context: context, source: source, client: client, runtime: runtime, ingestor: ingestor, limits: limits)
                counters.count(source: source, outcome: response.status == .accepted ? "accepted" : "duplicate")
                metrics.increment("hookproxy_ingest_requests_total", [("source", source), ("status", String(response.status.code))])
                return response
            } catch let error as APIError {
                if sourceConfig != nil { counters.count(source: source, outcome: IngestCounters.outcome(for: error)) }
                metrics.increment(
                    "hookproxy_ingest_requests_total",
                    [("source", sourceConfig != nil ? source : "_unknown"), ("status", String(error.status.code))])
                if error.errorCode == "mapper_failed" || error.errorCode == "mapper_crashed", let mapper = sourceConfig?.mapper {
                    metrics.increment("hookproxy_plugin_errors_total", [("plugin", mapper.name), ("operation", "map")])
                }
                throw error
            }
        }
        return router
    }

    /// One request with a slot: size, source and the limits that need no body are checked before the body is read,
    /// then the ingest data path runs.
    ///
    /// Rate limits are spent only by whom they belong to: a source with `verify` counts its `rate_limit` after the
    /// signature verifies, so an outsider without the secret cannot keep the sender at 429; a failed verification counts
    /// against the client address's `rate_limit_unverified`, and an address past it is refused before its body is read.
    /// A source without `verify` cannot tell senders apart and counts every request before the body.
    static func handle(
        _ request: Request, context: HookproxyRequestContext, source: String, client: String, runtime: Runtime, ingestor: Ingestor,
        limits: IngestLimits
    ) async throws -> Response {
        let server = runtime.config.server
        let limit = server.maxBodyBytes
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit {
            throw APIError.bodyTooLarge(limit: limit)
        }
        // Unknown and rate-limited sources are answered before the body is read.
        guard let sourceConfig = runtime.config.sources[source] else { throw APIError.unknownSource(source) }
        var admission = Ingestor.Admission()
        if sourceConfig.verify == nil {
            if let rateLimit = sourceConfig.rateLimit, let retryAfter = limits.admit(source: source, limit: rateLimit) {
                throw APIError.rateLimited(source: source, retryAfter: max(1, retryAfter))
            }
        } else {
            let unverified = server.rateLimitUnverified
            if let retryAfter = limits.unverifiedWait(client: client, limit: unverified) {
                throw APIError.unverifiedRateLimited(retryAfter: retryAfter)
            }
            admission.failed = { limits.recordUnverified(client: client, limit: unverified) }
            if let rateLimit = sourceConfig.rateLimit {
                admission.passed = { () throws(APIError) in
                    if let retryAfter = limits.admit(source: source, limit: rateLimit) {
                        throw APIError.rateLimited(source: source, retryAfter: max(1, retryAfter))
                    }
                }
            }
        }
        let watch = limits.firstByte
        let ticket = watch.start(channel: context.channel, timeout: server.firstByteDeadline)
        let buffer: ByteBuffer
        do {
            buffer = try await readBody(request, limit: limit, timeout: server.readTimeout) { watch.finish(ticket) }
            watch.finish(ticket)
        } catch let error as APIError where error.status == .requestTimeout {
            watch.finish(ticket)
            // Stop reading: the answer still goes out, then the connection closes instead of draining the rest of a
            // body that may never end (the client would hold the connection as long as it trickles).
            context.channel.close(mode: .input, promise: nil)
            throw error
        } catch {
            // The sweeper closed the connection: no body byte came within first_byte_timeout.
            if watch.finish(ticket) { throw APIError.requestTimeout(server.firstByteDeadline) }
            throw error
        }
        let headers = request.headers.map { (name: $0.name.canonicalName, value: $0.value) }
        let accepted = try await ingestor.ingest(
            runtime: runtime, source: source, headers: headers, body: Array(buffer.readableBytesView),
            contentType: request.headers[.contentType] ?? "", requestID: context.requestID, admission: admission)
        let body: JSONValue = ["id": .string(accepted.id), "status": accepted.duplicate ? "duplicate" : "accepted"]
        return try JSONResponse(status: accepted.duplicate ? .ok : .accepted, body: body).response(from: request, context: context)
    }

    /// Collects the body, refusing more than `limit` bytes (413, checked as it streams in) and a body still arriving
    /// `timeout` after the request started (408, checked as each part arrives), so a slow client cannot hold a request
    /// open forever. A body that stops arriving altogether is cut off by the listener's idle timeout (twice
    /// `read_timeout`). No timer or extra task per request: this runs for every webhook (decisions §27).
    static func readBody(
        _ request: Request, limit: Int, timeout: Duration, firstPart: () -> Void = {}
    ) async throws -> ByteBuffer {
        let deadline = ContinuousClock.now + timeout
        var collected = ByteBuffer()
        var first = true
        do {
            for try await var part in request.body {
                if first {
                    first = false
                    firstPart()
                }
                guard collected.readableBytes + part.readableBytes <= limit else { throw APIError.bodyTooLarge(limit: limit) }
                collected.writeBuffer(&part)
                if ContinuousClock.now > deadline { throw APIError.requestTimeout(timeout) }
            }
        } catch let error as APIError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            // The HTTP framing itself is broken (bad chunk sizes, a connection cut mid-body): the client's fault.
            throw APIError.invalidBody("the request body could not be read: its HTTP framing is malformed or incomplete")
        }
        return collected
    }
}
