import Crypto
import Logging
import PluginKit

/// The ingest data path for one request: route -> verify -> parse -> map -> validate -> commit (group commit) -> wake
/// delivery.
///
/// Everything before the commit runs in the request's own task, in parallel with other requests; only the ready event
/// goes to the single writer. Nothing is stored for a request that is rejected.
struct Ingestor: Sendable {
    let runtime: RuntimeHolder
    let writer: GroupCommitter<NewEvent, InsertResult>
    let wake: WakeSignal
    let logger: Logger
    /// Where request bodies that crashed an in-process mapper are remembered.
    var journal: CallJournal? = nil

    /// The answer to an accepted request.
    struct Accepted: Sendable {
        var id: String
        var duplicate: Bool
    }

    /// What a verification's outcome spends (``IngestLimits``): a failure counts against the client address, a pass
    /// against the source's `rate_limit`, which may refuse the request with 429.
    struct Admission {
        var failed: () -> Void = {}
        var passed: () throws(APIError) -> Void = {}
    }

    /// Ingests one request under `runtime`, the configuration snapshot the request started with.
    func ingest(
        runtime: Runtime, source name: String, headers: [(name: String, value: String)], body: [UInt8], contentType: String,
        requestID: String, admission: Admission = Admission()
    ) async throws(APIError) -> Accepted {
        let new = try await Self.prepare(
            runtime: runtime, source: name, headers: headers, body: body, contentType: contentType, requestID: requestID,
            admission: admission, logger: logger, journal: journal)
        let event = new.event
        let deliveries = new.deliveries
        let result: InsertResult
        do {
            result = try await writer.submit(new)
        } catch {
            logger.error(
                "event not stored", metadata: ["source": "\(name)", "request_id": "\(requestID)", "error": "\(error)"])
            throw APIError.storageUnavailable()
        }
        switch result {
        case .stored:
            wake.signal(marking: deliveries.lazy.map(\.destination))
            logger.debug(
                "event accepted",
                metadata: [
                    "event_id": "\(event.id)", "source": "\(name)", "request_id": "\(requestID)", "deliveries": "\(deliveries.count)",
                ])
            return Accepted(id: event.id, duplicate: false)
        case .duplicate(let original):
            logger.info("duplicate event", metadata: ["event_id": "\(original)", "source": "\(name)", "request_id": "\(requestID)"])
            return Accepted(id: original, duplicate: true)
        }
    }

    /// Everything before the commit: verify (unless `verify` is false, as for `hookproxy preview`), parse, map and
    /// validate. Returns the event and its deliveries, ready to store.
    static func prepare(
        runtime: Runtime, source name: String, headers: [(name: String, value: String)], body: [UInt8], contentType: String,
        requestID: String, verify: Bool = true, admission: Admission = Admission(), logger: Logger, journal: CallJournal? = nil
    ) async throws(APIError) -> NewEvent {
        guard let source = runtime.config.sources[name] else { throw APIError.unknownSource(name) }

        if verify, let verify = source.verify {
            var lowercased: [String: String] = [:]
            for header in headers {
                let name = header.name.asciiLowercased()
                if lowercased[name] == nil { lowercased[name] = header.value }
            }
            if let reason = SignatureVerifier(config: verify).verify(headers: lowercased, body: body) {
                logger.warning(
                    "signature verification failed",
                    metadata: [
                        "source": "\(name)", "preset": "\(verify.preset.rawValue)", "reason": "\(reason)", "request_id": "\(requestID)",
                    ])
                admission.failed()
                throw APIError.signatureInvalid()
            }
            try admission.passed()
        }

        // Headers that carry a credential are "[redacted]" from here on: the mapper, the mapping, the store, the admin
        // API and every formatter see only the placeholder.
        var headerObject = JSONObject()
        for header in headers {
            let key = header.name.asciiLowercased()
            if source.redaction.redacts(key) {
                headerObject[key] = .string(HeaderRedaction.placeholder)
                continue
            }
            if case .string(let existing) = headerObject[key] {
                headerObject[key] = .string(existing + ", " + header.value)
            } else {
                headerObject[key] = .string(header.value)
            }
        }

        var payload: JSONValue?
        switch PayloadDecoder.decode(body: body, contentType: contentType) {
        case .payload(let value): payload = value
        case .opaque: payload = nil
        case .invalid(let reason):
            if source.requiresJSON || source.mapper != nil { throw APIError.invalidBody(reason) }
            payload = nil
        }
        if payload == nil, source.requiresJSON {
            throw APIError.invalidBody("source '\(name)' needs a JSON body (it maps required fields from it)")
        }

        var fields = JSONObject()
        if let mapper = runtime.instances.mapper(source: name) {
            let document: JSONValue = ["source": .string(name), "headers": .object(headerObject), "payload": payload ?? .null]
            // In process, a body that once crashed the whole process in this mapper is refused, not mapped again; the
            // journal notes the body's digest while the mapper runs, for the next start to remember it.
            var subject = CallSubject.none
            if let journal, mapper.executor.isolation == .inProcess {
                let digest = Array(SHA256.hash(data: body))
                if let poisoned = journal.poisoned(source: name, digest: digest) {
                    logger.warning(
                        "request refused: this body crashed the process in an in-process mapper before",
                        metadata: ["source": "\(name)", "plugin": "\(poisoned.plugin)", "request_id": "\(requestID)"])
                    throw APIError.mapperCrashed(
                        "plugin \(poisoned.plugin) crashed hookproxy mapping this request body before (isolation: in_process); "
                            + "it is refused until the plugin is isolated or fixed and hookproxy restarted")
                }
                subject = .payload(source: name, digest: digest)
            }
            // The executor reports a slow call (in the log and hookproxy_plugin_slow_calls_total).
            let outcome = await mapper.map(document: document.serializedBytes(), body: body, contentType: contentType, subject: subject)
            switch outcome {
            case .fields(let mapped): fields = mapped
            case .failed(let message, let permanent):
                logger.warning("mapper failed", metadata: ["source": "\(name)", "request_id": "\(requestID)", "error": "\(message)"])
                throw permanent ? APIError.mapperFailed(message) : APIError.mapperUnavailable(message)
            case .aborted(let reason):
                logger.error("mapper crashed", metadata: ["source": "\(name)", "request_id": "\(requestID)", "error": "\(reason)"])
                throw APIError.mapperCrashed(reason)
            }
        }
        for field in source.mapping {
            var value = field.selector.select(headers: headerObject, payload: payload)
            if value == nil || value == .null { value = field.defaultValue ?? value }
            if field.required, value == nil || value == .null {
                throw APIError.missingField(field.name, path: field.selector.description)
            }
            if let value { fields[field.name] = value }
        }

        let idempotencyKey =
            (source.idempotencyKey.flatMap { $0.select(headers: headerObject, payload: payload) }
            ?? source.idempotencyFallback.flatMap { $0.select(headers: headerObject, payload: payload) }).map(\.textValue)
        let receivedAt = Clock.milliseconds()
        let event = StoredEvent(
            id: EventID.make(milliseconds: receivedAt), source: name, receivedAt: receivedAt, contentType: contentType,
            headersJSON: JSONValue.object(headerObject).serialized(), body: body, fieldsJSON: JSONValue.object(fields).serialized())
        let deliveries = source.routes.map { NewDelivery(id: EventID.make(milliseconds: receivedAt), destination: $0.destination) }

        return NewEvent(event: event, idempotencyKey: idempotencyKey.flatMap { $0.isEmpty ? nil : $0 }, deliveries: deliveries)
    }
}
