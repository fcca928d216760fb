import PluginABI
import PluginKit

/// A complete hookproxy formatter in Swift with PluginKit: sends events to an ntfy topic (https://ntfy.sh or your own
/// server) as push notifications. The destination URL is the topic: `url: "https://ntfy.sh/my-alerts"`.
///
/// The body is the message text; ntfy reads the title, priority, tags and click-through link from headers. By default
/// the title is the mapped `title`, the message the mapped `summary`, the link the mapped `url`, and a mapped `status`
/// sets priority and an emoji tag, so `mapper: github` events look right with no options at all.
///
/// Options: `title`, `message` (templates), `priority` (1-5, overrides the status), `tags` (a list of ntfy tags).
struct NtfyFormatter: FormatterPlugin {
    static let name = "ntfy"
    static let version = "1.0.0"

    let title: Template
    let message: Template
    let priority: Int?
    let tags: [String]

    init(options: JSONValue) throws {
        let options = try PluginOptions(options, plugin: Self.name, known: ["title", "message", "priority", "tags"])
        title = try options.template("title") ?? Template("{{fields.title}}")
        message = try options.template("message") ?? Template("{{fields.summary}}")
        if let text = try options.string("priority") {
            guard let value = Int(text), (1...5).contains(value) else {
                throw PluginError.permanent("ntfy: option 'priority' must be 1 to 5")
            }
            priority = value
        } else {
            priority = nil
        }
        tags = options.raw("tags")?.arrayValue?.map { $0.textValue } ?? []
    }

    func format(_ event: FormatterEvent) throws -> FormatResult {
        let fields = event.fields
        var text = message.render(event)
        if text.isEmpty { text = "\(event.source) event \(event.id)" }
        let status = fields["status"]?.stringValue ?? ""
        var headers: [(name: String, value: String)] = []
        let heading = title.render(event)
        // Headers are one line; ntfy limits a message to 4096 bytes, so cut (between characters) below that.
        if !heading.isEmpty { headers.append(("X-Title", TextLimits.truncate(Self.oneLine(heading), to: 250))) }
        let statusPriority = ["failure": 4, "warning": 3, "success": 3, "info": 3, "neutral": 2][status]
        if let level = priority ?? statusPriority { headers.append(("X-Priority", String(level))) }
        let statusTag = ["failure": "rotating_light", "warning": "warning", "success": "white_check_mark"][status]
        let allTags = tags + (statusTag.map { [$0] } ?? [])
        if !allTags.isEmpty { headers.append(("X-Tags", allTags.joined(separator: ","))) }
        if let link = fields["url"]?.stringValue, link.hasPrefix("https://") || link.hasPrefix("http://") {
            headers.append(("X-Click", Self.oneLine(link)))
        }
        let body = Array(TextLimits.truncate(text, to: 4000).utf8)
        return .send(OutboundRequest(body: body, contentType: "text/plain; charset=utf-8", headers: headers))
    }

    /// Header values cannot hold line breaks.
    static func oneLine(_ text: String) -> String { String(text.map { $0.isNewline ? " " : $0 }) }
}

/// The plugin's one exported symbol (see hookproxy_plugin.h).
@_cdecl("hookproxy_plugin_entry")
public func hookproxyPluginEntry(_ hostABIVersion: UInt32, _ host: UnsafePointer<hookproxy_host>?)
    -> UnsafePointer<hookproxy_plugin>?
{
    PluginExport.entry(NtfyFormatter.self, host: host)
}
