import HTTPTypes
import Hummingbird
import Logging

/// Gives every answer an `X-Request-Id` (the client's, when it sent a sane one, else a new one) and turns every error
/// into the JSON error body, so that no response leaves without both.
struct RequestIDMiddleware: RouterMiddleware {
    typealias Context = HookproxyRequestContext

    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let requestID = Self.requestID(from: request)
        var context = context
        context.requestID = requestID
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as APIError {
            response = try error.response(from: request, context: context)
        } catch let error as HTTPError {
            response = try APIError.from(error).response(from: request, context: context)
        } catch {
            logger.error("unexpected error", metadata: ["request_id": "\(requestID)", "error": "\(error)"])
            response = try APIError.internalError().response(from: request, context: context)
        }
        response.headers[.requestID] = requestID
        return response
    }

    /// The client's `X-Request-Id` when it is short printable ASCII, else a fresh id.
    static func requestID(from request: Request) -> String {
        if let given = request.headers[.requestID], !given.isEmpty, given.utf8.count <= 128,
            given.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
        {
            return given
        }
        return EventID.make()
    }
}

extension HTTPField.Name {
    static let requestID = HTTPField.Name("X-Request-Id")!
    /// A second `Host` header (HTTP/1's first one becomes the request's authority).
    static let host = HTTPField.Name("Host")!
    static let secFetchSite = HTTPField.Name("Sec-Fetch-Site")!
    static let xForwardedFor = HTTPField.Name("X-Forwarded-For")!
}
