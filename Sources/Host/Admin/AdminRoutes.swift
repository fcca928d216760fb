import Foundation
import Hummingbird
import Logging
import PluginKit

/// The admin listener's routes: health, readiness, event detail, destinations' flow-control state and replay. Loopback by default; with
/// `server.admin_token` set, everything but `/healthz` requires `Authorization: Bearer <token>`.
enum AdminRoutes {
    static func router(
        store: any EventStore, runtime: RuntimeHolder, engine: DeliveryEngine, counters: IngestCounters, limits: IngestLimits,
        wake: WakeSignal, logger: Logger
    ) -> Router<HookproxyRequestContext> {
        let router = Router(context: HookproxyRequestContext.self)
        router.add(middleware: RequestIDMiddleware(logger: logger))
        router.get("/healthz") { _, _ in JSONResponse(body: ["status": "ok"]) }

        let protected = router.group().add(middleware: AdminTokenMiddleware(runtime: runtime))
        protected.get("/readyz") { _, _ -> JSONResponse in
            do {
                try await store.ping()
            } catch {
                return JSONResponse(status: .serviceUnavailable, body: ["status": "unavailable", "detail": "storage is not reachable"])
            }
            return JSONResponse(body: ["status": "ready"])
        }
        protected.get("/admin/events/:id") { _, context -> JSONResponse in
            let id = try context.parameters.require("id")
            guard let detail = try await store.eventDetail(id: id) else { throw APIError.notFound("no event with id '\(id)'") }
            return JSONResponse(body: EventJSON.detail(detail))
        }
        protected.get("/admin/destinations") { _, _ -> JSONResponse in
            let depths = try await store.queueDepths()
            let destinations = engine.laneSnapshots().map { EventJSON.destination($0, depths: depths[$0.name] ?? [:]) }
            return JSONResponse(body: ["destinations": .array(destinations)])
        }
        protected.get("/admin/sources") { _, _ -> JSONResponse in
            let config = runtime.runtime.config
            let counts = counters.snapshot
            let sources: [JSONValue] = config.sources.values.sorted { $0.name < $1.name }.map { source in
                [
                    "name": .string(source.name),
                    "verify": source.verify.map { .string($0.preset.rawValue) } ?? .null,
                    "rate_limit": source.rateLimit.map { .string($0.description) } ?? .null,
                    "replay": .bool(source.replay),
                    "destinations": .array(source.routes.map { .string($0.destination) }),
                    "requests": .object(
                        JSONObject((counts[source.name] ?? [:]).sorted { $0.key < $1.key }.map { ($0.key, .int($0.value)) })),
                ]
            }
            let ingest: JSONValue = [
                "requests_in_progress": .int(limits.requestsInProgress),
                "max_concurrent_requests": .int(config.server.maxConcurrentRequests),
                "requests_shed": .int(limits.requestsShed),
            ]
            return JSONResponse(body: ["ingest": ingest, "sources": .array(sources)])
        }
        protected.post("/admin/events/:id/replay") { _, context -> JSONResponse in
            let id = try context.parameters.require("id")
            do {
                let ids = try await Replayer(store: store, config: runtime.runtime.config).replay(eventID: id)
                wake.signal()
                logger.info(
                    "event replayed", metadata: ["event_id": "\(id)", "request_id": "\(context.requestID)", "deliveries": "\(ids.count)"])
                return JSONResponse(
                    status: .accepted,
                    body: ["id": .string(id), "status": "scheduled", "deliveries": .array(ids.map(JSONValue.string))])
            } catch Replayer.Failure.notFound {
                throw APIError.notFound("no event with id '\(id)'")
            } catch Replayer.Failure.disabled(let source) {
                throw APIError.replayDisabled(source: source)
            }
        }
        return router
    }
}

/// Requires the admin bearer token when one is configured; compares in constant time.
struct AdminTokenMiddleware: RouterMiddleware {
    typealias Context = HookproxyRequestContext
    let runtime: RuntimeHolder

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let token = runtime.runtime.config.server.adminToken else { return try await next(request, context) }
        let given = request.headers[.authorization] ?? ""
        guard given.hasPrefix("Bearer "), ConstantTime.equal(given.utf8.dropFirst(7), token.utf8) else {
            throw APIError.unauthorized()
        }
        return try await next(request, context)
    }
}

/// JSON shapes of stored things, shared by the admin API and the CLI's `--json`.
enum EventJSON {
    static func detail(_ detail: EventDetail) -> JSONValue {
        let event = detail.event
        let bodyText = String(validating: event.body, as: UTF8.self)
        return [
            "id": .string(event.id),
            "source": .string(event.source),
            "received_at": .string(Clock.rfc3339(milliseconds: event.receivedAt)),
            "content_type": .string(event.contentType),
            "idempotency_key": detail.idempotencyKey.map(JSONValue.string) ?? .null,
            "headers": (try? JSONValue(parsing: event.headersJSON)) ?? [:],
            "fields": (try? JSONValue(parsing: event.fieldsJSON)) ?? [:],
            "body": bodyText.map(JSONValue.string) ?? .null,
            "body_base64": bodyText == nil ? .string(Data(event.body).base64EncodedString()) : .null,
            "deliveries": .array(detail.deliveries.map(delivery)),
        ]
    }

    static func delivery(_ delivery: EventDetail.Delivery) -> JSONValue {
        [
            "id": .string(delivery.id),
            "destination": .string(delivery.destination),
            "status": .string(delivery.status.rawValue),
            "attempts": .int(delivery.attempts),
            "next_attempt_at": delivery.nextAttemptAt.map { .string(Clock.rfc3339(milliseconds: $0)) } ?? .null,
            "last_error": delivery.lastError.map(JSONValue.string) ?? .null,
            "replay_of": delivery.replayOf.map(JSONValue.string) ?? .null,
            "history": .array(delivery.history.map(attempt)),
        ]
    }

    static func destination(_ lane: DestinationLane.Snapshot, depths: [DeliveryStatus: Int]) -> JSONValue {
        let pausedUntil: JSONValue
        if case .open(let until) = lane.circuit { pausedUntil = .string(Clock.rfc3339(milliseconds: until)) } else { pausedUntil = .null }
        return [
            "name": .string(lane.name),
            "state": .string(lane.state),
            "in_flight": .int(lane.inFlight),
            "consecutive_failures": .int(lane.consecutiveFailures),
            "paused_until": pausedUntil,
            "rate_limited_until": lane.rateLimitedUntil.map { .string(Clock.rfc3339(milliseconds: $0)) } ?? .null,
            "ordering": .string(lane.ordering.rawValue),
            "rate_limit": lane.rateLimit.map { .string($0.description) } ?? .null,
            "max_concurrency": .int(lane.maxConcurrency),
            "queue": [
                "pending": .int(depths[.pending] ?? 0), "in_flight": .int(depths[.inFlight] ?? 0),
                "retrying": .int(depths[.retrying] ?? 0), "dead": .int(depths[.dead] ?? 0),
            ],
        ]
    }

    static func attempt(_ attempt: AttemptRecord) -> JSONValue {
        [
            "number": .int(attempt.number),
            "started_at": .string(Clock.rfc3339(milliseconds: attempt.startedAt)),
            "duration_ms": .int(attempt.durationMilliseconds),
            "http_status": attempt.httpStatus.map { .int($0) } ?? .null,
            "response_body": .string(String(decoding: attempt.responseBody, as: UTF8.self)),
            "error": attempt.error.map(JSONValue.string) ?? .null,
        ]
    }
}
