/// A text template with `{{path}}` placeholders, the one template language of hookproxy and its plugins.
///
/// A path is dotted and starts at the event document: `{{fields.repo}}`, `{{payload.pull_request.title}}`,
/// `{{payload.commits.0.message}}`, `{{headers.x-github-event}}`, `{{source}}`, `{{id}}`, `{{received_at}}`,
/// `{{destination.name}}`, `{{attempt}}`. Spaces inside the braces are ignored. A path that leads nowhere renders as
/// the empty string. Values are inserted through an escape function chosen by the output format, never the template's
/// own text, so an operator's `<https://example.com|link>` stays a link while a payload's `<` is escaped.
public struct Template: Sendable, Hashable {
    enum Segment: Sendable, Hashable {
        case literal(String)
        /// A path, and its components (split once, here, rather than on every render).
        case placeholder(path: String, components: [String])
    }

    let segments: [Segment]

    /// The template's source text.
    public let source: String

    /// Parses a template; an unclosed `{{` or an empty placeholder is an error naming the position.
    public init(_ source: String) throws(TemplateError) {
        self.source = source
        var segments: [Segment] = []
        var rest = Substring(source)
        while let open = rest.firstRange(of: "{{") {
            if open.lowerBound > rest.startIndex { segments.append(.literal(String(rest[..<open.lowerBound]))) }
            guard let close = rest[open.upperBound...].firstRange(of: "}}") else {
                throw TemplateError(template: source, reason: "'{{' is never closed with '}}'")
            }
            let path = rest[open.upperBound..<close.lowerBound].trimmingSpaces()
            guard !path.isEmpty, !path.contains(where: { $0 == "{" || $0 == "}" }) else {
                throw TemplateError(template: source, reason: "empty or malformed placeholder '{{\(path)}}'")
            }
            segments.append(
                .placeholder(path: String(path), components: path.split(separator: ".", omittingEmptySubsequences: false).map(String.init)))
            rest = rest[close.upperBound...]
        }
        if !rest.isEmpty { segments.append(.literal(String(rest))) }
        self.segments = segments
    }

    /// True when the template has no placeholders.
    public var isConstant: Bool { !segments.contains { if case .placeholder = $0 { true } else { false } } }

    /// When the whole template is one placeholder, its path.
    public var soloPath: String? {
        if segments.count == 1, case .placeholder(let path, _) = segments[0] { return path }
        return nil
    }

    /// When the whole template is one placeholder, its path's components.
    var soloComponents: [String]? {
        if segments.count == 1, case .placeholder(_, let components) = segments[0] { return components }
        return nil
    }

    /// Renders against `context` (the event document), passing each inserted value through `escape`.
    public func render(_ context: JSONValue, escape: (String) -> String = { $0 }) -> String {
        render(escape: escape) { context.value(atComponents: $0) }
    }

    /// Renders against `event`'s document, passing each inserted value through `escape`. The payload is parsed only
    /// when a placeholder leads into it.
    public func render(_ event: PluginInput, escape: (String) -> String = { $0 }) -> String {
        render(escape: escape) { event.value(atComponents: $0) }
    }

    private func render(escape: (String) -> String, lookup: ([String]) -> JSONValue?) -> String {
        var output = ""
        for segment in segments {
            switch segment {
            case .literal(let text): output += text
            case .placeholder(_, let components): output += escape(lookup(components)?.textValue ?? "")
            }
        }
        return output
    }
}

/// A template that cannot be parsed.
public struct TemplateError: Error, CustomStringConvertible, Sendable {
    /// The template text.
    public let template: String
    /// What is wrong.
    public let reason: String

    public var description: String { "template \"\(template)\": \(reason)" }
}

extension Substring {
    func trimmingSpaces() -> Substring {
        var result = self
        while result.first?.isWhitespace == true { result = result.dropFirst() }
        while result.last?.isWhitespace == true { result = result.dropLast() }
        return result
    }
}

/// A JSON document whose strings may hold `{{path}}` placeholders: the `template` mode of the generic formatter.
///
/// A string that is exactly one placeholder is replaced by the value it points at with its JSON type intact
/// (`"{{payload.count}}"` stays a number, `"{{fields}}"` becomes an object); any other string is rendered as text.
/// The result is always valid JSON, whatever the inserted values contain.
public struct JSONTemplate: Sendable, Hashable {
    indirect enum Node: Sendable, Hashable {
        case constant(JSONValue)
        case text(Template)
        case array([Node])
        case object([(String, Node)])

        static func == (lhs: Node, rhs: Node) -> Bool { "\(lhs)" == "\(rhs)" }
        func hash(into hasher: inout Hasher) { hasher.combine("\(self)") }
    }

    let root: Node

    /// Compiles a template document; any malformed placeholder is an error.
    public init(_ document: JSONValue) throws(TemplateError) {
        root = try Self.compile(document)
    }

    private static func compile(_ value: JSONValue) throws(TemplateError) -> Node {
        switch value {
        case .string(let text):
            let template = try Template(text)
            return template.isConstant ? .constant(value) : .text(template)
        case .array(let elements):
            var nodes: [Node] = []
            for element in elements { nodes.append(try compile(element)) }
            return .array(nodes)
        case .object(let object):
            var members: [(String, Node)] = []
            for member in object { members.append((member.key, try compile(member.value))) }
            return .object(members)
        default:
            return .constant(value)
        }
    }

    /// Renders the document against `context`.
    public func render(_ context: JSONValue) -> JSONValue { Self.render(root, PluginInput(document: context, body: [], contentType: "")) }

    /// Renders the document against `event`'s document, parsing its payload only when a placeholder leads into it.
    public func render(_ event: PluginInput) -> JSONValue { Self.render(root, event) }

    private static func render(_ node: Node, _ event: PluginInput) -> JSONValue {
        switch node {
        case .constant(let value): return value
        case .text(let template):
            if let components = template.soloComponents { return event.value(atComponents: components) ?? .null }
            return .string(template.render(event))
        case .array(let nodes): return .array(nodes.map { render($0, event) })
        case .object(let members): return .object(JSONObject(members.map { ($0.0, render($0.1, event)) }))
        }
    }
}
