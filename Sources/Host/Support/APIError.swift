import Foundation
import HTTPTypes
import Hummingbird
import PluginKit

/// Every failure answered over HTTP, ingest and admin alike: an HTTP status and the JSON body
/// `{"error": "<code>", "detail": "<what is wrong, naming the field>"}`. The one place where failures map to statuses.
struct APIError: Error, HTTPResponseError, CustomStringConvertible {
    private enum Code: String {
        case unknownSource = "unknown_source"
        case invalidBody = "invalid_body"
        case invalidParameter = "invalid_parameter"
        case invalidConfig = "invalid_config"
        case pausedInConfig = "paused_in_config"
        case missingField = "missing_field"
        case bodyTooLarge = "body_too_large"
        case storageUnavailable = "storage_unavailable"
        case notFound = "not_found"
        case replayDisabled = "replay_disabled"
        case unauthorized
        case misdirectedRequest = "misdirected_request"
        case crossOrigin = "cross_origin"
        case unsupportedMediaType = "unsupported_media_type"
        case mapperFailed = "mapper_failed"
        case mapperCrashed = "mapper_crashed"
        case rateLimited = "rate_limited"
        case overloaded
        case requestTimeout = "request_timeout"
        case http
        case internalError = "internal_error"
    }

    private let code: Code
    private let httpCode: String?
    let status: HTTPResponse.Status
    /// The human-readable detail sent to the client.
    let detail: String
    var headers: HTTPFields = [:]

    private init(_ code: Code, _ status: HTTPResponse.Status, _ detail: String) {
        self.code = code
        self.httpCode = nil
        self.status = status
        self.detail = detail
    }

    private init(http status: HTTPResponse.Status, detail: String) {
        self.code = .http
        self.httpCode = status.reasonPhrase.lowercased().replacingOccurrences(of: " ", with: "_")
        self.status = status
        self.detail = detail
    }

    /// The machine-readable error code.
    var errorCode: String { httpCode ?? code.rawValue }

    static func unknownSource(_ name: String) -> APIError {
        APIError(.unknownSource, .notFound, "no source named '\(name)' is configured")
    }
    static func invalidBody(_ detail: String) -> APIError { APIError(.invalidBody, .badRequest, detail) }
    /// An operator asked to resume a destination that the configuration file pauses.
    static func pausedInConfig(_ destination: String) -> APIError {
        APIError(
            .pausedInConfig, .conflict,
            "destination '\(destination)' is paused in the configuration (paused: true); remove that and reload to resume it")
    }
    /// A reload found the configuration file invalid; the detail lists every problem (file:line: key: message).
    static func invalidConfig(_ error: ConfigError) -> APIError {
        APIError(
            .invalidConfig, .unprocessableContent, "the configuration was not reloaded; the running one is unchanged:\n\(error.description)"
        )
    }
    /// A query parameter (or JSON member of an admin request) that is unknown or malformed.
    static func invalidParameter(_ name: String, _ detail: String) -> APIError {
        APIError(.invalidParameter, .badRequest, "'\(name)': \(detail)")
    }
    static func missingField(_ field: String, path: String) -> APIError {
        APIError(.missingField, .badRequest, "required field '\(field)' (\(path)) is missing from the request")
    }
    static func bodyTooLarge(limit: Int) -> APIError {
        APIError(.bodyTooLarge, .contentTooLarge, "the body is larger than the limit of \(limit) bytes")
    }
    static func storageUnavailable() -> APIError {
        APIError(.storageUnavailable, .serviceUnavailable, "the event could not be stored durably; nothing was accepted, try again")
    }
    static func notFound(_ what: String) -> APIError { APIError(.notFound, .notFound, what) }
    static func replayDisabled(source: String) -> APIError {
        APIError(.replayDisabled, .forbidden, "replay is disabled for source '\(source)' (replay: false)")
    }
    static func unauthorized() -> APIError {
        var error = APIError(.unauthorized, .unauthorized, "a valid 'Authorization: Bearer <admin token>' header is required")
        error.headers[.wwwAuthenticate] = "Bearer"
        return error
    }
    /// An admin request whose `Host` does not name the admin listener (DNS rebinding, or a name not in `admin_hosts`).
    static func misdirected(_ detail: String) -> APIError { APIError(.misdirectedRequest, .misdirectedRequest, detail) }
    /// A state-changing admin request from another origin.
    static func crossOrigin(_ detail: String) -> APIError { APIError(.crossOrigin, .forbidden, detail) }
    static func unsupportedMediaType(_ detail: String) -> APIError { APIError(.unsupportedMediaType, .unsupportedMediaType, detail) }
    /// The source is over its rate limit; try again after `retryAfter` seconds.
    static func rateLimited(source: String, retryAfter: Int) -> APIError {
        var error = APIError(.rateLimited, .tooManyRequests, "source '\(source)' is over its rate limit; retry after \(retryAfter) s")
        error.headers[.retryAfter] = String(retryAfter)
        return error
    }
    /// The client address has failed verification too often (`server.rate_limit_unverified`); refused before its body
    /// is read. The source's own `rate_limit` is untouched.
    static func unverifiedRateLimited(retryAfter: Int) -> APIError {
        var error = APIError(
            .rateLimited, .tooManyRequests,
            "too many requests from this address failed signature verification; retry after \(retryAfter) s")
        error.headers[.retryAfter] = String(retryAfter)
        return error
    }
    /// Too many requests are in progress (from this client address, with `client`); the request is shed before its body
    /// is read.
    static func overloaded(client: Bool = false) -> APIError {
        let detail =
            client
            ? "the server is handling too many requests from this address (max_concurrent_per_client); retry shortly"
            : "the server is handling too many requests; retry shortly"
        var error = APIError(.overloaded, .serviceUnavailable, detail)
        error.headers[.retryAfter] = "1"
        return error
    }
    /// The body did not arrive within the read timeout.
    static func requestTimeout(_ timeout: Duration) -> APIError {
        var error = APIError(.requestTimeout, .requestTimeout, "the request body did not arrive within \(timeout.compactDescription)")
        error.headers[.connection] = "close"
        return error
    }
    /// A signature that does not verify. The detail never says which part failed.
    static func signatureInvalid() -> APIError {
        APIError(.unauthorized, .unauthorized, "the request's signature could not be verified")
    }
    static func mapperFailed(_ message: String) -> APIError {
        APIError(.mapperFailed, .badRequest, "the source's mapper failed: \(message)")
    }
    /// A mapper's transient failure: nothing was stored; the sender should try again.
    static func mapperUnavailable(_ message: String) -> APIError {
        var error = APIError(
            .mapperFailed, .serviceUnavailable, "the source's mapper failed for now, nothing was stored; retry: \(message)")
        error.headers[.retryAfter] = "5"
        return error
    }
    /// The mapper crashed, or missed its deadline, on this request (or crashed the process on this very body before):
    /// nothing was stored; the detail names the plugin.
    static func mapperCrashed(_ reason: String) -> APIError {
        var error = APIError(.mapperCrashed, .serviceUnavailable, "\(reason); nothing was stored")
        error.headers[.retryAfter] = "30"
        return error
    }
    static func internalError() -> APIError { APIError(.internalError, .internalServerError, "an unexpected error occurred") }

    /// Wraps an error Hummingbird raised itself (no route, method not allowed, ...).
    static func from(_ error: HTTPError) -> APIError {
        APIError(http: error.status, detail: error.body ?? error.status.reasonPhrase)
    }

    var description: String { "\(status.code) \(errorCode): \(detail)" }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        let body: JSONValue = ["error": .string(errorCode), "detail": .string(detail)]
        var headers = self.headers
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body.serializedBytes())))
    }
}

/// A JSON response body.
struct JSONResponse: ResponseGenerator {
    var status: HTTPResponse.Status = .ok
    var body: JSONValue

    func response(from request: Request, context: some RequestContext) throws -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: body.serializedBytes())))
    }
}
