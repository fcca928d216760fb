/// Which request headers carry a credential, and so are stored (and shown, and given to plugins) as `"[redacted]"`
/// instead of their value: `Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie`, every name containing
/// `token`, `api-key`, `apikey`, `api_key`, `secret` or `password` (GitLab's `X-Gitlab-Token` is its shared secret), and
/// the names a source's or `defaults`' `redact_headers` lists.
struct HeaderRedaction: Sendable, Equatable {
    /// What a redacted header's value is replaced with.
    static let placeholder = "[redacted]"

    /// Names redacted whatever the configuration says.
    static let credentialNames: Set<String> = ["authorization", "proxy-authorization", "cookie", "set-cookie"]
    /// A name containing one of these is redacted.
    static let credentialParts = ["token", "api-key", "apikey", "api_key", "secret", "password"]

    /// ``credentialParts`` as bytes, for the check every header of every request makes.
    private static let credentialPartBytes = credentialParts.map { Array($0.utf8) }

    /// The configured names (lowercase).
    var extra: Set<String> = []

    /// True when the header `name` (lowercase) is not to be stored.
    func redacts(_ name: String) -> Bool {
        Self.credentialNames.contains(name) || extra.contains(name)
            || Self.credentialPartBytes.contains { name.containsUTF8($0) }
    }

    /// The SQL condition (SQLite and PostgreSQL alike) that is true for a header name `column` the built-in rules redact:
    /// what the storage migration scrubs from events stored before redaction existed.
    static func sqlCondition(_ column: String) -> String {
        let names = credentialNames.sorted().map { "'\($0)'" }.joined(separator: ", ")
        let parts = credentialParts.map { "\(column) LIKE '%\($0.replacingOccurrences(of: "_", with: "\\_"))%' ESCAPE '\\'" }
        return "(\(column) IN (\(names)) OR " + parts.joined(separator: " OR ") + ")"
    }
}
