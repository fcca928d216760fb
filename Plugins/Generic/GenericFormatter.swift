import PluginKit

/// Sends events to any HTTP endpoint, in one of three modes:
/// - `raw` (the default): the original body and content type, byte for byte;
/// - `envelope`: the event document as JSON (id, source, received_at, headers, payload, fields, destination, attempt);
/// - `template`: the JSON document in option `template`, with `{{path}}` placeholders rendered (always valid JSON).
///
/// Options: `mode`, `template`, `content_type` (overrides the content type sent), `headers` (static extra headers).
struct GenericFormatter: FormatterPlugin {
    static let name = "generic"
    static let version = "1.0.0"

    enum Mode: String { case raw, envelope, template }

    let mode: Mode
    let template: JSONTemplate?
    let contentType: String?
    let headers: [(name: String, value: String)]

    init(options: JSONValue) throws {
        let options = try PluginOptions(options, plugin: Self.name, known: ["mode", "template", "content_type", "headers"])
        mode = try options.choice("mode", ["raw", "envelope", "template"]).flatMap(Mode.init(rawValue:)) ?? .raw
        contentType = try options.string("content_type")
        headers = try options.stringPairs("headers").map { (name: $0.0, value: $0.1) }
        if mode == .template {
            guard let document = options.raw("template"), !document.isNull else {
                throw PluginError.permanent("generic: mode 'template' needs option 'template' (a JSON document)")
            }
            do {
                template = try JSONTemplate(document)
            } catch {
                throw PluginError.permanent("generic: option 'template': \(error)")
            }
        } else {
            if options.raw("template") != nil {
                throw PluginError.permanent("generic: option 'template' is only used with mode: template")
            }
            template = nil
        }
    }

    func format(_ event: FormatterEvent) throws -> FormatResult {
        switch mode {
        case .raw:
            let type = contentType ?? (event.contentType.isEmpty ? "application/octet-stream" : event.contentType)
            return .send(OutboundRequest(body: event.body, contentType: type, headers: headers))
        case .envelope:
            return .send(
                OutboundRequest(
                    body: event.document.serializedBytes(), contentType: contentType ?? "application/json",
                    headers: headers))
        case .template:
            guard let template else { throw PluginError.permanent("generic: mode 'template' has no template") }
            let rendered = template.render(event)
            return .send(
                OutboundRequest(body: rendered.serializedBytes(), contentType: contentType ?? "application/json", headers: headers))
        }
    }
}
