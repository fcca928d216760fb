import PluginKit

/// Formats events as Discord execute-webhook requests: one embed with title, description, link, the mapped fields,
/// timestamp and colour, always within Discord's limits, and with `allowed_mentions` empty so that text from a payload
/// can never ping anyone.
///
/// Options: `username`, `avatar_url`, `color` (`0xRRGGBB`, `#RRGGBB` or a number), `title`, `description`, `url`,
/// `content`, `footer` (templates), `fields` (`true` to list the mapped fields, the default).
struct DiscordFormatter: FormatterPlugin {
    static let name = "discord"
    static let version = "1.0.0"

    /// Discord's documented limits, counted in characters.
    enum Limit {
        static let content = 2000
        static let username = 80
        static let title = 256
        static let description = 4096
        static let fields = 25
        static let fieldName = 256
        static let fieldValue = 1024
        static let footer = 2048
        static let embedTotal = 6000
    }

    let username: Template?
    let avatarURL: Template?
    let color: Int?
    let title: Template?
    let description: Template?
    let url: Template?
    let content: Template?
    let footer: Template?
    let listFields: Bool

    init(options: JSONValue) throws {
        let options = try PluginOptions(
            options, plugin: Self.name,
            known: ["username", "avatar_url", "color", "title", "description", "url", "content", "footer", "fields"])
        username = try options.template("username")
        avatarURL = try options.template("avatar_url")
        color = try options.string("color").map { try Self.parseColor($0) }
        title = try options.template("title")
        description = try options.template("description")
        url = try options.template("url")
        content = try options.template("content")
        footer = try options.template("footer")
        listFields = try options.bool("fields") ?? true
    }

    static func parseColor(_ text: String) throws -> Int {
        let trimmed = text.trimmingPrefix("#").trimmingPrefix("0x")
        let value = trimmed.count == text.count ? Int(text) : Int(trimmed, radix: 16)
        guard let value, (0...0xFF_FFFF).contains(value) else {
            throw PluginError.permanent("discord: option 'color' must be #RRGGBB, 0xRRGGBB or a number up to 16777215")
        }
        return value
    }

    func format(_ event: FormatterEvent) throws -> FormatResult {
        let context = event.document
        let fields = event.fields

        var embed = JSONObject()
        let titleText = title?.render(context) ?? fields["title"]?.textValue ?? "\(event.source) event"
        var usedBudget = 0
        let embedTitle = TextLimits.truncate(titleText.isEmpty ? "\(event.source) event" : titleText, to: Limit.title)
        embed["title"] = .string(embedTitle)
        usedBudget += TextLimits.length(embedTitle)

        let descriptionText = description?.render(context) ?? fields["summary"]?.textValue ?? ""
        var embedDescription = TextLimits.truncate(descriptionText, to: Limit.description)

        if let link = url?.render(context) ?? fields["url"]?.textValue, Self.isWebURL(link) {
            embed["url"] = .string(link)
        }
        if !event.receivedAt.isEmpty { embed["timestamp"] = .string(event.receivedAt) }
        if let color { embed["color"] = .int(color) }

        let footerText = TextLimits.truncate(footer?.render(context) ?? "hookproxy · \(event.source)", to: Limit.footer)
        if !footerText.isEmpty {
            embed["footer"] = ["text": .string(footerText)]
            usedBudget += TextLimits.length(footerText)
        }

        var embedFields: [JSONValue] = []
        if listFields {
            let shown = fields.filter { !["title", "summary", "url"].contains($0.key) && !$0.value.isNull }
            for member in shown.prefix(Limit.fields) {
                let name = TextLimits.truncate(member.key.isEmpty ? "\u{200B}" : member.key, to: Limit.fieldName)
                let valueText = member.value.textValue
                let value = TextLimits.truncate(valueText.isEmpty ? "—" : valueText, to: Limit.fieldValue)
                let size = TextLimits.length(name) + TextLimits.length(value)
                // Keep room for the description: fields are dropped before the description is cut further.
                if usedBudget + size + min(TextLimits.length(embedDescription), 1) > Limit.embedTotal { break }
                usedBudget += size
                embedFields.append(["name": .string(name), "value": .string(value), "inline": .bool(value.count <= 40)])
            }
        }
        embedDescription = TextLimits.truncate(embedDescription, to: min(Limit.description, Limit.embedTotal - usedBudget))
        if !embedDescription.isEmpty { embed["description"] = .string(embedDescription) }
        if !embedFields.isEmpty { embed["fields"] = .array(embedFields) }

        var message = JSONObject()
        if let content {
            let text = TextLimits.truncate(content.render(context), to: Limit.content)
            if !text.isEmpty { message["content"] = .string(text) }
        }
        if let name = username?.render(context), !name.isEmpty {
            message["username"] = .string(TextLimits.truncate(name, to: Limit.username))
        }
        if let avatar = avatarURL?.render(context), Self.isWebURL(avatar) { message["avatar_url"] = .string(avatar) }
        message["embeds"] = [.object(embed)]
        // Nothing in a message may mention anyone: payload text is untrusted.
        message["allowed_mentions"] = ["parse": []]
        return .send(OutboundRequest(json: .object(message)))
    }

    static func isWebURL(_ text: String) -> Bool {
        (text.hasPrefix("https://") || text.hasPrefix("http://")) && text.count > 8 && !text.contains(" ")
    }
}

extension String {
    fileprivate func trimmingPrefix(_ prefix: String) -> String {
        hasPrefix(prefix) ? String(dropFirst(prefix.count)) : self
    }
}
