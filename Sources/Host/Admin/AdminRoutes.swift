import Foundation
import Hummingbird
import Logging
import PluginKit

/// The admin listener's routes: health, readiness, event detail, destinations' flow-control state and replay. Loopback by default; with
/// `server.admin_token` set, everything but `/healthz` requires `Authorization: Bearer <token>`. ``AdminRequestGuard``
/// keeps web pages out (Host, Origin and Content-Type checks).
enum AdminRoutes {
    static func router(
        store: any EventRecords & StoreMaintenance, runtime: RuntimeHolder, engine: DeliveryEngine, counters: IngestCounters,
        limits: IngestLimits,
        reloader: Reloader, metrics: HookproxyMetrics, wake: WakeSignal, logger: Logger, listenHost: String
    ) -> Router<HookproxyRequestContext> {
        let router = Router(context: HookproxyRequestContext.self)
        router.add(middleware: RequestIDMiddleware(logger: logger))
        router.add(middleware: AdminRequestGuard(listenHost: listenHost, runtime: runtime))
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
        protected.get("/admin/events") { request, _ -> JSONResponse in
            let query = try AdminQuery.parse(query: request, allowed: ["cursor", "limit"])
            let page = try await store.listEvents(query.filter, cursor: query.cursor, limit: query.limit)
            return JSONResponse(body: [
                "events": .array(page.items.map(EventJSON.summary)), "next_cursor": page.nextCursor.map(JSONValue.string) ?? .null,
            ])
        }
        protected.get("/admin/deliveries") { request, _ -> JSONResponse in
            let query = try AdminQuery.parse(query: request, allowed: ["cursor", "limit"])
            let page = try await store.listDeliveries(query.filter, cursor: query.cursor, limit: query.limit)
            return JSONResponse(body: EventJSON.page(page, named: "deliveries", EventJSON.summary))
        }
        protected.post("/admin/replay") { request, context -> JSONResponse in
            let body = try await request.body.collect(upTo: 65_536)
            guard let object = (try? JSONValue(parsing: Array(body.readableBytesView)))?.objectValue else {
                throw APIError.invalidBody("the body must be a JSON object of filters: source, destination, status, since, until, dry_run")
            }
            let query = try AdminQuery.parse(object.members.map { ($0.key, $0.value) }, allowed: ["dry_run"])
            guard query.filter != RecordFilter() else {
                throw APIError.invalidBody(
                    "give at least one filter (source, destination, status, since, until); to replay everything, give since")
            }
            do {
                let summary = try await Replayer(store: store, config: runtime.runtime.config).replay(
                    matching: query.filter, dryRun: query.dryRun)
                if summary.scheduled > 0 { wake.signal() }
                logger.info(
                    "replay by filter",
                    metadata: [
                        "request_id": "\(context.requestID)", "dry_run": "\(query.dryRun)", "matched": "\(summary.matched)",
                        "scheduled": "\(summary.scheduled)",
                    ])
                return JSONResponse(status: query.dryRun ? .ok : .accepted, body: EventJSON.replay(summary, dryRun: query.dryRun))
            } catch Replayer.Failure.disabled(let source) {
                throw APIError.replayDisabled(source: source)
            }
        }
        protected.get("/metrics") { _, _ -> Response in
            // Gauges that describe the present are read when scraped.
            metrics.set("hookproxy_ingest_requests_in_progress", to: Double(limits.requestsInProgress))
            let depths = try await store.queueDepths()
            for lane in engine.laneSnapshots() {
                let destination = [("destination", lane.name)]
                for status in [DeliveryStatus.pending, .inFlight, .retrying, .dead] {
                    metrics.set(
                        "hookproxy_deliveries", destination + [("state", status.rawValue)], to: Double(depths[lane.name]?[status] ?? 0))
                }
                let circuit: Double
                switch lane.circuit {
                case .closed: circuit = 0
                case .halfOpen: circuit = 1
                case .open: circuit = 2
                }
                metrics.set("hookproxy_destination_circuit_state", destination, to: circuit)
                metrics.set("hookproxy_destination_rate_limited", destination, to: lane.rateLimitedUntil == nil ? 0 : 1)
                metrics.set("hookproxy_destination_in_flight", destination, to: Double(lane.inFlight))
                metrics.set("hookproxy_destination_suspended", destination, to: lane.suspendedBy == nil ? 0 : 1)
            }
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: metrics.render())))
        }
        protected.get("/admin/plugins") { _, _ -> JSONResponse in
            let current = runtime.runtime
            return JSONResponse(
                body: EventJSON.plugins(current.catalog, settings: current.plugins.settings(for:), health: current.plugins.health()))
        }
        protected.get("/admin/config") { _, _ -> JSONResponse in
            JSONResponse(body: ConfigJSON.render(runtime.runtime.config))
        }
        protected.post("/admin/reload") { _, _ -> JSONResponse in
            let report: Reloader.Report
            do throws(ConfigError) {
                report = try await reloader.reload()
            } catch {
                throw APIError.invalidConfig(error)
            }
            wake.signal()
            return JSONResponse(
                body: [
                    "status": "reloaded", "sources": .int(report.sources), "destinations": .int(report.destinations),
                    "plugins": .array(report.plugins.map(JSONValue.string)),
                    "refused_plugins": .array(report.refusedPlugins.map { ["file": .string($0.file), "reason": .string($0.reason)] }),
                    "restart_required": .array(report.restartRequired.map(JSONValue.string)),
                ])
        }
        protected.get("/admin/events/:id") { _, context -> JSONResponse in
            let id = try context.parameters.require("id")
            guard let detail = try await store.eventDetail(id: id) else { throw APIError.notFound("no event with id '\(id)'") }
            return JSONResponse(body: EventJSON.detail(detail))
        }
        for (action, suspend) in [("pause", true), ("resume", false)] {
            protected.post("/admin/destinations/:name/\(action)") { _, context -> JSONResponse in
                let name = try context.parameters.require("name")
                guard let destination = runtime.runtime.config.destinations[name] else {
                    throw APIError.notFound("no destination named '\(name)'")
                }
                if !suspend, destination.paused { throw APIError.pausedInConfig(name) }
                guard let lane = try await engine.setSuspended(suspend, destination: name) else {
                    throw APIError.notFound("no destination named '\(name)'")
                }
                let depths = try await store.queueDepths()
                return JSONResponse(body: EventJSON.destination(lane, depths: depths[name] ?? [:]))
            }
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
                "max_concurrent_per_client": .int(config.server.maxConcurrentPerClient),
                "requests_shed_per_client": .int(limits.clientRequestsShed),
                "first_byte_timeouts": .int(limits.firstByte.closed),
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
            "suspended_by": lane.suspendedBy.map(JSONValue.string) ?? .null,
            "queue": [
                "pending": .int(depths[.pending] ?? 0), "in_flight": .int(depths[.inFlight] ?? 0),
                "retrying": .int(depths[.retrying] ?? 0), "dead": .int(depths[.dead] ?? 0),
            ],
        ]
    }

    /// A listing page: `{"<name>": [...], "next_cursor": "..." or null}`.
    static func page<Item>(_ page: Page<Item>, named name: String, _ item: (Item) -> JSONValue) -> JSONValue {
        .object(JSONObject([(name, .array(page.items.map(item))), ("next_cursor", page.nextCursor.map(JSONValue.string) ?? .null)]))
    }

    static func summary(_ event: EventSummary) -> JSONValue {
        [
            "id": .string(event.id),
            "source": .string(event.source),
            "received_at": .string(Clock.rfc3339(milliseconds: event.receivedAt)),
            "deliveries": .array(
                event.deliveries.map {
                    ["id": .string($0.id), "destination": .string($0.destination), "status": .string($0.status.rawValue)]
                }
            ),
        ]
    }

    static func summary(_ delivery: DeliverySummary) -> JSONValue {
        [
            "id": .string(delivery.id),
            "event_id": .string(delivery.eventID),
            "source": .string(delivery.source),
            "destination": .string(delivery.destination),
            "status": .string(delivery.status.rawValue),
            "attempts": .int(delivery.attempts),
            "next_attempt_at": delivery.nextAttemptAt.map { .string(Clock.rfc3339(milliseconds: $0)) } ?? .null,
            "last_error": delivery.lastError.map(JSONValue.string) ?? .null,
            "replay_of": delivery.replayOf.map(JSONValue.string) ?? .null,
            "created_at": .string(Clock.rfc3339(milliseconds: delivery.createdAt)),
            "updated_at": .string(Clock.rfc3339(milliseconds: delivery.updatedAt)),
        ]
    }

    static func replay(_ summary: Replayer.Summary, dryRun: Bool) -> JSONValue {
        [
            "dry_run": .bool(dryRun),
            "matched": .int(summary.matched),
            "scheduled": .int(summary.scheduled),
            "by_destination": .object(JSONObject(summary.byDestination.sorted { $0.key < $1.key }.map { ($0.key, .int($0.value)) })),
            "skipped": [
                "replay_disabled": .int(summary.skippedReplayDisabled),
                "unknown_destination": .int(summary.skippedUnknownDestination),
            ],
        ]
    }

    /// The plugins found, each with how it runs (`isolation`, `call_timeout`, `memory_limit`, `workers`) and, for those
    /// a running configuration uses, the health of its workers or threads; and the files refused.
    static func plugins(
        _ catalog: PluginLoader.Catalog, settings: (String) -> PluginSettings, health: [String: PluginHealth]
    ) -> JSONValue {
        [
            "plugins": .array(
                catalog.plugins.values.sorted { $0.name < $1.name }.map { plugin in
                    let configured = settings(plugin.name)
                    return [
                        "name": .string(plugin.name), "version": .string(plugin.version),
                        "capabilities": .array(plugin.capabilityNames.map(JSONValue.string)), "abi_version": .int(plugin.abiVersion),
                        "file": .string(plugin.file),
                        "isolation": .string(configured.isolation.rawValue),
                        "call_timeout": .string(configured.callTimeout.compactDescription),
                        "memory_limit": configured.isolation == .process ? .int(configured.memoryLimit) : .null,
                        "workers": .int(configured.workers),
                        "health": health[plugin.name].map(Self.health) ?? .null,
                    ]
                }),
            "refused": .array(catalog.refusals.map { ["file": .string($0.file), "reason": .string($0.reason)] }),
        ]
    }

    static func health(_ health: PluginHealth) -> JSONValue {
        [
            "state": .string(health.state), "running": .int(health.running), "busy": .int(health.busy), "queued": .int(health.queued),
            "crashes": .int(health.crashes), "timeouts": .int(health.timeouts), "restarts": .int(health.restarts),
            "stuck": .int(health.stuck),
            "last_failure": health.lastFailure.map { ["at": .string(Clock.rfc3339(milliseconds: $0.at)), "reason": .string($0.reason)] }
                ?? .null,
            "restarting_until": health.restartingUntil.map { .string(Clock.rfc3339(milliseconds: $0)) } ?? .null,
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
