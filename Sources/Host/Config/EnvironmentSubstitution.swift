import Foundation

/// Expands `${VAR}`, `${VAR:-default}` and `${file:/path}` in configuration values. `$$` stands for a literal `$`.
struct EnvironmentSubstitution: Sendable {
    var environment: [String: String]

    /// A reference that cannot be resolved.
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    func expand(_ text: String) throws(Failure) -> String {
        guard text.contains("$") else { return text }
        var output = ""
        var rest = Substring(text)
        while let dollar = rest.firstIndex(of: "$") {
            output += rest[..<dollar]
            let after = rest.index(after: dollar)
            if after < rest.endIndex, rest[after] == "$" {
                output += "$"
                rest = rest[rest.index(after: after)...]
                continue
            }
            guard after < rest.endIndex, rest[after] == "{" else {
                output += "$"
                rest = rest[after...]
                continue
            }
            guard let close = rest[after...].firstIndex(of: "}") else {
                throw Failure(description: "'${' is never closed with '}'")
            }
            let reference = String(rest[rest.index(after: after)..<close])
            output += try resolve(reference)
            rest = rest[rest.index(after: close)...]
        }
        output += rest
        return output
    }

    private func resolve(_ reference: String) throws(Failure) -> String {
        if reference.hasPrefix("file:") {
            let path = String(reference.dropFirst("file:".count))
            guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                throw Failure(description: "secret file '\(path)' cannot be read")
            }
            // One trailing newline goes, as Docker and Kubernetes users expect (`echo secret > file`). "\r\n" is one
            // Character in Swift, so both end in a single Character to drop.
            if let last = text.last, last == "\n" || last == "\r\n" { return String(text.dropLast()) }
            return text
        }
        let name: String
        let fallback: String?
        if let separator = reference.range(of: ":-") {
            name = String(reference[..<separator.lowerBound])
            fallback = String(reference[separator.upperBound...])
        } else {
            name = reference
            fallback = nil
        }
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
            throw Failure(description: "'${\(reference)}' is not a valid variable reference")
        }
        if let value = environment[name], !(value.isEmpty && fallback != nil) { return value }
        if let fallback { return fallback }
        throw Failure(description: "environment variable \(name) is not set (write ${\(name):-default} to give a default)")
    }
}
