import Foundation
import PluginKit

/// Where a value comes from in an inbound request: a header (`header:X-GitHub-Delivery`) or a JSON path into the
/// payload (`$.repository.full_name`, also written `body:$.repository.full_name`).
///
/// JSON paths support member names (`.name`, `['name with spaces']`) and array indexes (`[0]`, `[-1]` for the last).
enum ValueSelector: Sendable, Hashable, CustomStringConvertible {
    case header(String)
    case jsonPath([PathComponent])

    enum PathComponent: Sendable, Hashable {
        case member(String)
        case index(Int)
    }

    /// Parses `header:NAME`, `body:$...` or `$...`; the error says what is wrong with the text.
    init(parsing text: String) throws(SelectorError) {
        if text.hasPrefix("header:") {
            let name = text.dropFirst("header:".count).trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty else { throw SelectorError("'header:' needs a header name") }
            self = .header(name.lowercased())
            return
        }
        let path = text.hasPrefix("body:") ? String(text.dropFirst("body:".count)) : text
        self = .jsonPath(try Self.parsePath(path))
    }

    private static func parsePath(_ text: String) throws(SelectorError) -> [PathComponent] {
        let characters = Array(text)
        guard characters.first == "$" else {
            throw SelectorError("'\(text)' is neither a JSON path starting with '$' nor 'header:NAME'")
        }
        var components: [PathComponent] = []
        var position = 1
        while position < characters.count {
            switch characters[position] {
            case ".":
                position += 1
                let start = position
                while position < characters.count, characters[position] != ".", characters[position] != "[" { position += 1 }
                guard position > start else { throw SelectorError("empty member name in '\(text)'") }
                components.append(.member(String(characters[start..<position])))
            case "[":
                position += 1
                guard position < characters.count else { throw SelectorError("unclosed '[' in '\(text)'") }
                if characters[position] == "'" || characters[position] == "\"" {
                    let quote = characters[position]
                    position += 1
                    let start = position
                    while position < characters.count, characters[position] != quote { position += 1 }
                    guard position + 1 < characters.count, characters[position + 1] == "]" else {
                        throw SelectorError("unclosed quoted name in '\(text)'")
                    }
                    components.append(.member(String(characters[start..<position])))
                    position += 2
                } else {
                    let start = position
                    while position < characters.count, characters[position] != "]" { position += 1 }
                    guard position < characters.count, let index = Int(String(characters[start..<position])) else {
                        throw SelectorError("'[...]' must hold an index or a quoted name in '\(text)'")
                    }
                    components.append(.index(index))
                    position += 1
                }
            default:
                throw SelectorError("unexpected '\(characters[position])' in '\(text)'")
            }
        }
        return components
    }

    /// True for JSON paths: the selector needs a JSON body.
    var readsBody: Bool {
        if case .jsonPath = self { return true }
        return false
    }

    /// The selected value: a header's text, or the value at the path (`nil` when absent).
    func select(headers: JSONObject, payload: JSONValue?) -> JSONValue? {
        switch self {
        case .header(let name):
            return headers[name]
        case .jsonPath(let components):
            guard var current = payload else { return nil }
            for component in components {
                switch (component, current) {
                case (.member(let name), .object(let object)):
                    guard let next = object[name] else { return nil }
                    current = next
                case (.index(let index), .array(let elements)):
                    let resolved = index < 0 ? elements.count + index : index
                    guard elements.indices.contains(resolved) else { return nil }
                    current = elements[resolved]
                default:
                    return nil
                }
            }
            return current
        }
    }

    var description: String {
        switch self {
        case .header(let name): return "header:\(name)"
        case .jsonPath(let components):
            return "$"
                + components.map {
                    switch $0 {
                    case .member(let name):
                        name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" } ? ".\(name)" : "['\(name)']"
                    case .index(let index): "[\(index)]"
                    }
                }.joined()
        }
    }
}

/// A selector that cannot be parsed.
struct SelectorError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
