/// Typed, checked access to a plugin instance's options, with errors that name the option.
///
/// Create it with the option names the plugin knows; any other key is refused (with a suggestion when one is close),
/// so a typo in `sources.yaml` is a configuration error rather than silently ignored.
public struct PluginOptions: Sendable {
    public let object: JSONObject
    private let plugin: String

    public init(_ options: JSONValue, plugin: String, known: Set<String>) throws {
        self.plugin = plugin
        switch options {
        case .null: object = JSONObject()
        case .object(let value): object = value
        default: throw PluginError.permanent("\(plugin): options must be a mapping")
        }
        for key in object.keys where !known.contains(key) {
            let hint = Self.closest(to: key, in: known).map { " (did you mean '\($0)'?)" } ?? ""
            throw PluginError.permanent("\(plugin): unknown option '\(key)'\(hint)")
        }
    }

    /// A string option, or `nil` when absent.
    public func string(_ key: String) throws -> String? {
        guard let value = object[key], !value.isNull else { return nil }
        switch value {
        case .string(let text): return text
        case .number(let text): return text
        case .bool(let flag): return flag ? "true" : "false"
        default: throw PluginError.permanent("\(plugin): option '\(key)' must be text")
        }
    }

    /// A template option, parsed, or `nil` when absent.
    public func template(_ key: String) throws -> Template? {
        guard let text = try string(key) else { return nil }
        do {
            return try Template(text)
        } catch {
            throw PluginError.permanent("\(plugin): option '\(key)': \(error)")
        }
    }

    /// A boolean option, or `nil` when absent.
    public func bool(_ key: String) throws -> Bool? {
        guard let value = object[key], !value.isNull else { return nil }
        guard let flag = value.boolValue else { throw PluginError.permanent("\(plugin): option '\(key)' must be true or false") }
        return flag
    }

    /// A string option restricted to `choices`, or `nil` when absent.
    public func choice(_ key: String, _ choices: [String]) throws -> String? {
        guard let text = try string(key) else { return nil }
        guard choices.contains(text) else {
            throw PluginError.permanent(
                "\(plugin): option '\(key)' must be one of \(choices.joined(separator: ", ")), not '\(text)'")
        }
        return text
    }

    /// A mapping of string to string (for example static headers), or `[]` when absent.
    public func stringPairs(_ key: String) throws -> [(String, String)] {
        guard let value = object[key], !value.isNull else { return [] }
        guard let mapping = value.objectValue else { throw PluginError.permanent("\(plugin): option '\(key)' must be a mapping") }
        return try mapping.map { member in
            switch member.value {
            case .string(let text): return (member.key, text)
            case .number(let text): return (member.key, text)
            default: throw PluginError.permanent("\(plugin): option '\(key).\(member.key)' must be text")
            }
        }
    }

    /// The raw value of an option.
    public func raw(_ key: String) -> JSONValue? { object[key] }

    /// The closest known name to `key` by edit distance, when it is close enough to be a likely typo.
    public static func closest(to key: String, in candidates: some Collection<String>) -> String? {
        let best = candidates.map { ($0, editDistance(key, $0)) }.min { $0.1 < $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }
        guard let best, best.1 <= max(2, key.count / 3) else { return nil }
        return best.0
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
