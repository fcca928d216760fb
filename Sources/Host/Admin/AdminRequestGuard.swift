import Foundation
import HTTPTypes
import Hummingbird

/// What a `Host` header may name on the admin listener.
///
/// A web page can reach a loopback admin listener in two ways: DNS rebinding (its own domain name, re-pointed at
/// 127.0.0.1, so the browser sends `Host: attacker.example`) and a cross-origin form post. This answers the first:
/// only the listener's own address, `localhost` and the names in `server.admin_hosts` are served.
struct AdminHost: Sendable {
    /// The address the admin listener is bound to, lowercased.
    let listenHost: String
    /// `server.admin_hosts`, lowercased.
    let extraHosts: [String]

    /// Whether `authority` (a `Host` header: `name`, `name:port`, `[v6]:port`) names this listener.
    func accepts(authority: String) -> Bool {
        guard let host = Self.host(ofAuthority: authority) else { return false }
        if host == "localhost" || host == listenHost || extraHosts.contains(host) { return true }
        // A wildcard listener is reached at any of the machine's addresses; an address is never a rebound name.
        return ["0.0.0.0", "::", ""].contains(listenHost) && Self.isIPLiteral(host)
    }

    /// The host part of a `Host` header, lowercased, without port, brackets or a trailing dot; nil when malformed.
    static func host(ofAuthority authority: String) -> String? {
        let text = authority.lowercased()
        var host: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.isEmpty || (rest.first == ":" && rest.dropFirst().allSatisfy(\.isASCIIDigit)) else { return nil }
        } else if let colon = text.lastIndex(of: ":") {
            guard text[text.index(after: colon)...].allSatisfy(\.isASCIIDigit) else { return nil }
            host = text[..<colon]
        } else {
            host = Substring(text)
        }
        if host.hasSuffix(".") { host = host.dropLast() }
        guard !host.isEmpty, host.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else { return nil }
        return String(host)
    }

    /// An IPv4 or IPv6 address written as such (brackets allowed).
    static func isIPLiteral(_ text: String) -> Bool {
        let bare = text.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        var ipv4 = in_addr()
        var ipv6 = in6_addr()
        return inet_pton(AF_INET, bare, &ipv4) == 1 || inet_pton(AF_INET6, bare, &ipv6) == 1
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}

/// Guards the admin listener against web pages in the operator's browser: every request's `Host` must name the
/// listener (421 otherwise); a state-changing request (anything but GET, HEAD and OPTIONS) must come from the same
/// origin when it says where it comes from (`Origin`, `Sec-Fetch-Site`; 403 otherwise) and must be
/// `Content-Type: application/json` (415 otherwise), which a cross-origin page cannot send without a CORS preflight that
/// the admin API never grants.
struct AdminRequestGuard: RouterMiddleware {
    typealias Context = HookproxyRequestContext
    /// The address the admin listener was started on (a restart-only setting).
    let listenHost: String
    let runtime: RuntimeHolder

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let hosts = AdminHost(listenHost: listenHost.lowercased(), extraHosts: runtime.runtime.config.server.adminHosts)
        // HTTP/1's first Host header becomes the authority; one left among the fields is a second Host header.
        guard let authority = request.head.authority, request.headers[.host] == nil else {
            throw APIError.misdirected("the request must carry exactly one Host header")
        }
        guard hosts.accepts(authority: authority) else {
            throw APIError.misdirected(
                "Host '\(authority.prefix(100))' does not name this admin listener; add the name to server.admin_hosts to serve it")
        }
        switch request.method {
        case .get, .head, .options: return try await next(request, context)
        default: break
        }
        if let origin = request.headers[.origin] {
            let own = ["http://\(authority)", "https://\(authority)"]
            guard own.contains(where: { $0.caseInsensitiveCompare(origin) == .orderedSame }) else {
                throw APIError.crossOrigin("Origin '\(origin.prefix(100))' is not this admin listener (http://\(authority))")
            }
        }
        if let site = request.headers[.secFetchSite]?.lowercased(), site != "same-origin", site != "none" {
            throw APIError.crossOrigin("Sec-Fetch-Site is '\(site.prefix(40))'; only same-origin requests may change state")
        }
        let mediaType = request.headers[.contentType]?.split(separator: ";", maxSplits: 1).first.map {
            $0.trimmingCharacters(in: .whitespaces).lowercased()
        }
        guard mediaType == "application/json" else {
            throw APIError.unsupportedMediaType(
                "state-changing admin requests must be sent with Content-Type: application/json, even with an empty body")
        }
        return try await next(request, context)
    }
}
