import Foundation
import PluginKit
import Yams

/// Walks a YAML node tree, converting values and collecting every problem with its file, line and key, so that one run
/// of `hookproxy check` reports everything that is wrong rather than the first thing.
final class ConfigReader {
    let file: String
    let substitution: EnvironmentSubstitution
    private(set) var problems: [ConfigProblem] = []

    init(file: String, substitution: EnvironmentSubstitution) {
        self.file = file
        self.substitution = substitution
    }

    /// Records a problem at `node`'s line.
    func problem(_ node: Node?, _ key: String, _ message: String) {
        problems.append(ConfigProblem(file: file, line: Self.line(of: node), key: key, message: message))
    }

    static func line(of node: Node?) -> Int? { node?.mark.map(\.line) }

    func location(_ node: Node?, _ key: String) -> ConfigLocation {
        ConfigLocation(file: file, line: Self.line(of: node) ?? 0, key: key)
    }

    /// A mapping's entries as (key, key node, value node); records a problem and returns `nil` for other nodes.
    /// Keys not in `allowed` (when given) are reported with a suggestion.
    func entries(_ node: Node, _ key: String, allowed: [String]? = nil) -> [(String, Node, Node)]? {
        guard case .mapping(let mapping) = node else {
            problem(node, key, "must be a mapping")
            return nil
        }
        var result: [(String, Node, Node)] = []
        var seen = Set<String>()
        for (keyNode, value) in mapping {
            guard let name = keyNode.scalar?.string else {
                problem(keyNode, key, "keys must be plain text")
                continue
            }
            let path = key.isEmpty ? name : "\(key).\(name)"
            if !seen.insert(name).inserted {
                problem(keyNode, path, "is given twice")
                continue
            }
            if let allowed, !allowed.contains(name) {
                let hint = PluginOptions.closest(to: name, in: allowed).map { " (did you mean '\($0)'?)" } ?? ""
                problem(keyNode, path, "unknown key\(hint); allowed here: \(allowed.joined(separator: ", "))")
                continue
            }
            result.append((name, keyNode, value))
        }
        return result
    }

    /// A scalar as text with `${...}` references expanded.
    func string(_ node: Node, _ key: String) -> String? {
        guard case .scalar(let scalar) = node else {
            problem(node, key, "must be a single value, not a \(Self.kind(node))")
            return nil
        }
        do {
            return try substitution.expand(scalar.string)
        } catch {
            problem(node, key, error.description)
            return nil
        }
    }

    /// One of a closed set of names (an enum's raw values), or a problem listing them.
    func choice<Choice: RawRepresentable & CaseIterable>(_ node: Node, _ key: String, as type: Choice.Type = Choice.self) -> Choice?
    where Choice.RawValue == String {
        guard let text = string(node, key) else { return nil }
        guard let value = Choice(rawValue: text) else {
            let names = Choice.allCases.map(\.rawValue)
            problem(node, key, "must be one of \(names.joined(separator: ", ")), not '\(text)'")
            return nil
        }
        return value
    }

    func integer(_ node: Node, _ key: String, range: ClosedRange<Int>) -> Int? {
        guard let text = string(node, key) else { return nil }
        guard let value = Int(text.replacingOccurrences(of: "_", with: "")), range.contains(value) else {
            problem(node, key, "must be a whole number from \(range.lowerBound) to \(range.upperBound), not '\(text)'")
            return nil
        }
        return value
    }

    func number(_ node: Node, _ key: String, range: ClosedRange<Double>) -> Double? {
        guard let text = string(node, key) else { return nil }
        guard let value = Double(text), range.contains(value) else {
            problem(node, key, "must be a number from \(range.lowerBound) to \(range.upperBound), not '\(text)'")
            return nil
        }
        return value
    }

    func bool(_ node: Node, _ key: String) -> Bool? {
        guard let text = string(node, key) else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            problem(node, key, "must be true or false, not '\(text)'")
            return nil
        }
    }

    func duration(_ node: Node, _ key: String) -> Duration? {
        guard let text = string(node, key) else { return nil }
        guard let value = DurationParsing.parse(text) else {
            problem(node, key, "must be a duration such as 500ms, 15s, 5m, 2h or 30d (at most 36500d), not '\(text)'")
            return nil
        }
        return value
    }

    /// Converts a YAML subtree to JSON (plugin options, templates): plain scalars keep their YAML type, quoted ones are
    /// strings, and `${...}` references in strings are expanded.
    func json(_ node: Node, _ key: String) -> JSONValue {
        switch node {
        case .scalar(let scalar):
            if scalar.style == .plain {
                if node.null != nil { return .null }
                if let flag = node.bool { return .bool(flag) }
                if let value = node.int { return .int(value) }
                if let value = node.float, value.isFinite { return .double(value) }
            }
            return string(node, key).map(JSONValue.string) ?? .null
        case .sequence(let sequence):
            return .array(sequence.enumerated().map { json($1, "\(key)[\($0)]") })
        case .mapping(let mapping):
            var object = JSONObject()
            for (keyNode, value) in mapping {
                let name = keyNode.scalar?.string ?? ""
                object[name] = json(value, "\(key).\(name)")
            }
            return .object(object)
        case .alias:
            problem(node, key, "YAML aliases are not supported here")
            return .null
        }
    }

    static func kind(_ node: Node) -> String {
        switch node {
        case .scalar: "value"
        case .mapping: "mapping"
        case .sequence: "list"
        case .alias: "alias"
        }
    }
}
