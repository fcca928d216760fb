import Hummingbird
import PluginKit

/// Filters and paging of admin listings, from a query string (`GET`) or a JSON body (`POST /admin/replay`). Unknown
/// or malformed parameters are refused with 400 naming the parameter, so a typo never silently widens a replay.
struct AdminQuery: Sendable {
    var filter = RecordFilter()
    var cursor: String?
    var limit = 50
    var dryRun = false

    static let maximumLimit = 500

    /// Reads `source`, `destination`, `status`, `since`, `until` and the names in `extra` from `parameters`.
    static func parse(_ parameters: [(name: String, value: JSONValue)], allowed extra: Set<String>) throws -> AdminQuery {
        var query = AdminQuery()
        for (name, value) in parameters {
            func text() throws -> String {
                guard let text = value.stringValue, !text.isEmpty else {
                    throw APIError.invalidParameter(name, "must be a non-empty string")
                }
                return text
            }
            func time() throws -> Int64 {
                let text = try text()
                guard let milliseconds = Clock.parse(rfc3339: text) else {
                    throw APIError.invalidParameter(name, "must be an RFC 3339 time such as 2026-11-21T12:00:00Z, not '\(text)'")
                }
                return milliseconds
            }
            switch name {
            case "source": query.filter.source = try text()
            case "destination": query.filter.destination = try text()
            case "status":
                let text = try text()
                guard let status = DeliveryStatus(rawValue: text) else {
                    let names = DeliveryStatus.allCases.map(\.rawValue).joined(separator: ", ")
                    throw APIError.invalidParameter(name, "must be one of \(names), not '\(text)'")
                }
                query.filter.status = status
            case "since": query.filter.since = try time()
            case "until": query.filter.until = try time()
            case "cursor" where extra.contains(name): query.cursor = try text()
            case "limit" where extra.contains(name):
                guard let limit = value.intValue ?? Int(value.stringValue ?? ""), (1...maximumLimit).contains(limit) else {
                    throw APIError.invalidParameter(name, "must be a whole number from 1 to \(maximumLimit)")
                }
                query.limit = limit
            case "dry_run" where extra.contains(name):
                switch value {
                case .bool(let flag): query.dryRun = flag
                case .string("true"), .string("1"): query.dryRun = true
                case .string("false"), .string("0"): query.dryRun = false
                default: throw APIError.invalidParameter(name, "must be true or false")
                }
            default:
                let known = ["source", "destination", "status", "since", "until"] + extra.sorted()
                throw APIError.invalidParameter(name, "unknown parameter; known: \(known.joined(separator: ", "))")
            }
        }
        return query
    }

    /// From a request's query string.
    static func parse(query request: Request, allowed extra: Set<String>) throws -> AdminQuery {
        try parse(request.uri.queryParameters.map { (String($0.key), JSONValue.string(String($0.value))) }, allowed: extra)
    }
}
