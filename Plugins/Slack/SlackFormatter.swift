import PluginKit

/// Formats events as Slack incoming-webhook requests: a plain `text` fallback for notifications plus Block Kit blocks
/// (header, a mrkdwn section, the mapped fields, a context line), within Slack's limits, with `&`, `<` and `>` in
/// payload text escaped so that it cannot forge links or mentions.
///
/// Options: `title`, `text`, `description`, `footer` (templates; values inserted into mrkdwn are escaped, the template's
/// own text is not, so `<{{fields.url}}|open>` makes a link), `fields` (`true` to list the mapped fields, the default),
/// `link_text` (the text of the link to the mapped `url`, default "Open"), and `color` / `color_by` for the legacy
/// attachment colour bar (the blocks then go inside one attachment; see ``ColorRule``).
struct SlackFormatter: FormatterPlugin {
    static let name = "slack"
    static let version = "1.1.0"

    /// Slack's documented Block Kit limits, in characters.
    enum Limit {
        static let header = 150
        static let section = 3000
        static let fieldCount = 10
        static let field = 2000
        static let context = 2000
        static let blocks = 50
        static let text = 40000
    }

    let title: Template?
    let text: Template?
    let description: Template?
    let footer: Template?
    let listFields: Bool
    let linkText: String
    let colorRule: ColorRule

    init(options: JSONValue) throws {
        let options = try PluginOptions(
            options, plugin: Self.name, known: ["title", "text", "description", "footer", "fields", "link_text", "color", "color_by"])
        linkText = try options.string("link_text") ?? "Open"
        colorRule = try ColorRule(options, plugin: Self.name, automatic: false)
        title = try options.template("title")
        text = try options.template("text")
        description = try options.template("description")
        footer = try options.template("footer")
        listFields = try options.bool("fields") ?? true
    }

    /// Escapes the three characters Slack's mrkdwn gives meaning to.
    static func escape(_ text: String) -> String {
        guard text.contains(where: { $0 == "&" || $0 == "<" || $0 == ">" }) else { return text }
        var output = ""
        output.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": output += "&amp;"
            case "<": output += "&lt;"
            case ">": output += "&gt;"
            default: output.append(character)
            }
        }
        return output
    }

    /// Cuts mrkdwn to `limit` without leaving half an entity (`&am`) or half a link (`<https://…`) at the end.
    static func truncateMarkup(_ text: String, to limit: Int) -> String {
        guard TextLimits.length(text) > limit else { return text }
        var cut = TextLimits.truncate(text, to: limit)
        guard cut.hasSuffix(TextLimits.ellipsis) else { return cut }
        cut.removeLast()
        if let amp = cut.lastIndex(of: "&"), !cut[amp...].contains(";") { cut = String(cut[..<amp]) }
        if let open = cut.lastIndex(of: "<"), !cut[open...].contains(">") { cut = String(cut[..<open]) }
        return cut + TextLimits.ellipsis
    }

    func format(_ event: FormatterEvent) throws -> FormatResult {
        let context = event
        let fields = event.fields

        let titleText = title?.render(context) ?? fields["title"]?.textValue ?? "\(event.source) event"
        let header = TextLimits.truncate(titleText.isEmpty ? "\(event.source) event" : titleText, to: Limit.header)
        var blocks: [JSONValue] = [["type": "header", "text": ["type": "plain_text", "text": .string(header), "emoji": true]]]

        var body = description?.render(context, escape: Self.escape) ?? fields["summary"].map { Self.escape($0.textValue) } ?? ""
        if let link = fields["url"]?.textValue, description == nil, link.hasPrefix("http"), !link.contains(where: { "<>| ".contains($0) }) {
            body += (body.isEmpty ? "" : "\n") + "<\(link)|\(Self.escape(linkText).filter { $0 != "|" })>"
        }
        if !body.isEmpty {
            blocks.append(["type": "section", "text": ["type": "mrkdwn", "text": .string(Self.truncateMarkup(body, to: Limit.section))]])
        }

        if listFields {
            let shown = fields.filter { !["title", "summary", "url"].contains($0.key) && !$0.value.isNull }
            let entries: [JSONValue] = shown.map { member in
                let text = "*\(Self.escape(member.key))*\n\(Self.escape(member.value.textValue))"
                return ["type": "mrkdwn", "text": .string(Self.truncateMarkup(text, to: Limit.field))]
            }
            var start = 0
            // One context block is always kept at the end.
            while start < entries.count, blocks.count < Limit.blocks - 1 {
                let chunk = Array(entries[start..<min(start + Limit.fieldCount, entries.count)])
                blocks.append(["type": "section", "fields": .array(chunk)])
                start += Limit.fieldCount
            }
        }

        let footerText = footer?.render(context, escape: Self.escape) ?? "hookproxy · \(Self.escape(event.source)) · \(event.receivedAt)"
        if !footerText.isEmpty {
            blocks.append([
                "type": "context", "elements": [["type": "mrkdwn", "text": .string(Self.truncateMarkup(footerText, to: Limit.context))]],
            ])
        }

        let fallback = text?.render(context, escape: Self.escape) ?? Self.escape(header)
        let text = JSONValue.string(Self.truncateMarkup(fallback, to: Limit.text))
        if let color = colorRule.color(for: fields) {
            // The legacy attachment draws the colour bar beside the blocks.
            let attachment: JSONValue = ["color": .string(ColorRule.hex(color)), "blocks": .array(blocks)]
            return .send(OutboundRequest(json: ["text": text, "attachments": [attachment]]))
        }
        return .send(OutboundRequest(json: ["text": text, "blocks": .array(blocks)]))
    }
}
