import PluginKit

/// Formats events as Discord execute-webhook requests, always within Discord's limits, and never letting text from a
/// payload ping anyone: `allowed_mentions` lists only the users and roles named in the options.
///
/// Options (all templates unless noted; see docs/configuration.md):
/// - message: `username`, `avatar_url`, `content`, `mentions` (`{users: [ids], roles: [ids], everyone: bool}`),
///   `thread_name` (creates a thread in a forum channel; to post into an existing thread put `?thread_id=…` in the
///   destination URL), `overflow` (`truncate`, the default, or `split`: text beyond an embed's limits continues in
///   further embeds, and beyond one message's limits in further messages, sent in order, instead of being cut; not
///   across messages with `thread_name`, as each message would open a new thread);
/// - one embed from the top-level keys, or several from `embeds: [{…}, …]`, each with `title`, `description`, `url`,
///   `color` (`#RRGGBB`, `0xRRGGBB` or a number), `color_by` (a field name, or `{field, colors: {value: color},
///   default}`), `author` (`{name, url, icon_url}`), `footer`, `footer_icon_url`, `thumbnail_url`, `image_url`,
///   `timestamp` (bool), `fields` (`true`: the mapped fields; `false`; or a list of `{name, value, inline}`).
///
/// Without `title` the mapped field `title` is used, without `description` the field `summary`, without `url` the field
/// `url`; without a colour, the field `status` picks one (success green, failure red, warning yellow, info blue,
/// neutral grey); `thumbnail` and `image` fields are used when they are web URLs.
struct DiscordFormatter: FormatterPlugin {
    static let name = "discord"
    static let version = "1.1.0"

    /// Discord's documented limits, counted in characters (UTF-16 code units).
    enum Limit {
        static let content = 2000
        static let username = 80
        static let embeds = 10
        static let title = 256
        static let description = 4096
        static let fields = 25
        static let fieldName = 256
        static let fieldValue = 1024
        static let footer = 2048
        static let author = 256
        static let threadName = 100
        static let embedTotal = 6000
    }

    static let embedKeys: Set<String> = [
        "title", "description", "url", "color", "color_by", "author", "footer", "footer_icon_url", "thumbnail_url", "image_url",
        "timestamp", "fields",
    ]

    let username: Template?
    let avatarURL: Template?
    let content: Template?
    let mentionUsers: [String]
    let mentionRoles: [String]
    let mentionEveryone: Bool
    let threadName: Template?
    let split: Bool
    let embeds: [EmbedSpec]

    init(options: JSONValue) throws {
        let options = try PluginOptions(
            options, plugin: Self.name,
            known: Self.embedKeys.union(["username", "avatar_url", "content", "mentions", "thread_name", "overflow", "embeds"]))
        username = try options.template("username")
        avatarURL = try options.template("avatar_url")
        content = try options.template("content")
        threadName = try options.template("thread_name")
        split = try options.choice("overflow", ["truncate", "split"]) == "split"
        (mentionUsers, mentionRoles, mentionEveryone) = try Self.mentions(options.raw("mentions"))
        if let list = options.raw("embeds"), !list.isNull {
            guard let specs = list.arrayValue, (1...Limit.embeds).contains(specs.count) else {
                throw PluginError.permanent("discord: option 'embeds' must be a list of 1 to \(Limit.embeds) embeds")
            }
            if let key = Self.embedKeys.sorted().first(where: { options.raw($0) != nil }) {
                throw PluginError.permanent("discord: option '\(key)' goes inside one of 'embeds' when 'embeds' is given")
            }
            embeds = try specs.enumerated().map { index, spec in
                try EmbedSpec(try PluginOptions(spec, plugin: "\(Self.name): embeds[\(index)]", known: Self.embedKeys), primary: index == 0)
            }
        } else {
            embeds = [try EmbedSpec(options, primary: true)]
        }
    }

    private static func mentions(_ value: JSONValue?) throws -> ([String], [String], Bool) {
        guard let value, !value.isNull else { return ([], [], false) }
        let options = try PluginOptions(value, plugin: "\(name): mentions", known: ["users", "roles", "everyone"])
        func ids(_ key: String) throws -> [String] {
            guard let list = options.raw(key), !list.isNull else { return [] }
            guard let elements = list.arrayValue else {
                throw PluginError.permanent("discord: option 'mentions.\(key)' must be a list of ids")
            }
            return try elements.map { element in
                let text = element.textValue
                guard !text.isEmpty, text.allSatisfy(\.isNumber) else {
                    throw PluginError.permanent("discord: option 'mentions.\(key)' holds '\(text)', which is not a Discord id (digits)")
                }
                return text
            }
        }
        return (try ids("users"), try ids("roles"), try options.bool("everyone") ?? false)
    }

    /// The most messages one event is split into.
    static let maximumMessages = 10

    func format(_ event: FormatterEvent) throws -> FormatResult {
        var built: [Embed] = []
        for spec in embeds { built += spec.build(event, split: split) }
        let context = event
        let thread = threadName?.render(context) ?? ""
        // A message holds at most 10 embeds and 6000 characters across them. With `overflow: split` (and no
        // thread_name: each message would open a new thread) embeds that do not fit start a further message;
        // otherwise what does not fit is cut from the end.
        let continues = split && thread.isEmpty
        var messages: [[JSONValue]] = [[]]
        var budget = Limit.embedTotal
        for embed in built {
            if continues, !messages[messages.count - 1].isEmpty,
                messages[messages.count - 1].count == Limit.embeds || embed.size > budget
            {
                guard messages.count < Self.maximumMessages else { break }
                messages.append([])
                budget = Limit.embedTotal
            }
            if messages[messages.count - 1].count == Limit.embeds { break }
            guard let fitted = embed.fitted(to: budget) else {
                if continues { continue } else { break }
            }
            budget -= fitted.size
            messages[messages.count - 1].append(fitted.json)
        }

        var first = JSONObject()
        var text = content?.render(context, escape: Self.defuseMentions) ?? ""
        let tokens = mentionUsers.map { "<@\($0)>" } + mentionRoles.map { "<@&\($0)>" } + (mentionEveryone ? ["@everyone"] : [])
        if !tokens.isEmpty { text = tokens.joined(separator: " ") + (text.isEmpty ? "" : " " + text) }
        text = TextLimits.truncate(text, to: Limit.content)
        if !text.isEmpty { first["content"] = .string(text) }
        if !thread.isEmpty { first["thread_name"] = .string(TextLimits.truncate(thread, to: Limit.threadName)) }
        var common = JSONObject()
        if let name = username?.render(context), !name.isEmpty {
            common["username"] = .string(TextLimits.truncate(name, to: Limit.username))
        }
        if let avatar = avatarURL?.render(context), Self.isWebURL(avatar) { common["avatar_url"] = .string(avatar) }
        // Only what the options name may be mentioned; text from a payload never pings anyone.
        var allowed = JSONObject()
        allowed["parse"] = .array(mentionEveryone ? ["everyone"] : [])
        if !mentionUsers.isEmpty { allowed["users"] = .array(mentionUsers.map(JSONValue.string)) }
        if !mentionRoles.isEmpty { allowed["roles"] = .array(mentionRoles.map(JSONValue.string)) }

        let requests = messages.enumerated().map { index, embeds in
            var message = index == 0 ? first : JSONObject()
            for member in common { message[member.key] = member.value }
            message["embeds"] = .array(embeds)
            message["allowed_mentions"] = index == 0 ? .object(allowed) : ["parse": []]
            return OutboundRequest(json: .object(message))
        }
        return requests.count == 1 ? .send(requests[0]) : .sendAll(requests)
    }

    /// Inserted values cannot mention: `@` is followed by a zero-width space, so `@everyone` or `<@123>` from a payload
    /// stays text (allowed_mentions stops the ping anyway; this also stops the highlight).
    static func defuseMentions(_ text: String) -> String {
        guard text.contains("@") else { return text }
        return text.split(separator: "@", omittingEmptySubsequences: false).joined(separator: "@\u{200B}")
    }

    static func isWebURL(_ text: String) -> Bool {
        (text.hasPrefix("https://") || text.hasPrefix("http://")) && text.count > 8 && !text.contains(where: { $0 == " " || $0 == "\n" })
    }
}

/// One embed's options, parsed once.
struct EmbedSpec: Sendable {
    enum Fields: Sendable {
        case none
        case mapped
        case list([(name: Template, value: Template, inline: Bool?)])
    }

    let primary: Bool
    let title: Template?
    let description: Template?
    let url: Template?
    let colorRule: ColorRule
    let author: (name: Template, url: Template?, icon: Template?)?
    let footer: Template?
    let footerIcon: Template?
    let thumbnail: Template?
    let image: Template?
    let timestamp: Bool
    let fields: Fields

    init(_ options: PluginOptions, primary: Bool) throws {
        self.primary = primary
        title = try options.template("title")
        description = try options.template("description")
        url = try options.template("url")
        footer = try options.template("footer")
        footerIcon = try options.template("footer_icon_url")
        thumbnail = try options.template("thumbnail_url")
        image = try options.template("image_url")
        timestamp = try options.bool("timestamp") ?? true
        colorRule = try ColorRule(options, plugin: "discord", automatic: primary)
        if let value = options.raw("author"), !value.isNull {
            let author = try PluginOptions(value, plugin: "discord: author", known: ["name", "url", "icon_url"])
            guard let name = try author.template("name") else { throw PluginError.permanent("discord: option 'author' needs 'name'") }
            self.author = (name, try author.template("url"), try author.template("icon_url"))
        } else {
            author = nil
        }
        switch options.raw("fields") {
        case nil, .null?: fields = primary ? .mapped : .none
        case .bool(let flag)?: fields = flag ? .mapped : .none
        case .array(let list)?:
            fields = .list(
                try list.enumerated().map { index, element in
                    let field = try PluginOptions(element, plugin: "discord: fields[\(index)]", known: ["name", "value", "inline"])
                    guard let name = try field.template("name"), let value = try field.template("value") else {
                        throw PluginError.permanent("discord: option 'fields[\(index)]' needs 'name' and 'value'")
                    }
                    return (name, value, try field.bool("inline"))
                })
        default:
            throw PluginError.permanent("discord: option 'fields' must be true, false or a list of {name, value, inline}")
        }
    }

    /// The embed for `event`: one, or with `split`, a first embed and continuations holding what did not fit.
    func build(_ event: FormatterEvent, split: Bool) -> [Embed] {
        typealias Limit = DiscordFormatter.Limit
        let context = event
        let mapped = event.fields
        var embed = Embed()
        let fallbackTitle = primary ? (mapped["title"]?.textValue).flatMap { $0.isEmpty ? nil : $0 } ?? "\(event.source) event" : ""
        let renderedTitle = title?.render(context) ?? ""
        embed.title = TextLimits.truncate(renderedTitle.isEmpty ? fallbackTitle : renderedTitle, to: Limit.title)
        let descriptionText = description?.render(context) ?? (primary ? mapped["summary"]?.textValue ?? "" : "")
        if let link = url?.render(context) ?? (primary ? mapped["url"]?.textValue : nil), DiscordFormatter.isWebURL(link) {
            embed.url = link
        }
        embed.color = colorRule.color(for: mapped)
        if timestamp, !event.receivedAt.isEmpty { embed.timestamp = event.receivedAt }
        if let author {
            let name = author.name.render(context)
            if !name.isEmpty {
                embed.author = TextLimits.truncate(name, to: Limit.author)
                embed.authorURL = author.url?.render(context).nilUnlessWebURL
                embed.authorIcon = author.icon?.render(context).nilUnlessWebURL
            }
        }
        let footerText = footer?.render(context) ?? (primary ? "hookproxy · \(event.source)" : "")
        embed.footer = TextLimits.truncate(footerText, to: Limit.footer)
        embed.footerIcon = footerIcon?.render(context).nilUnlessWebURL
        embed.thumbnail = (thumbnail?.render(context) ?? (primary ? mapped["thumbnail"]?.textValue : nil))?.nilUnlessWebURL
        embed.image = (image?.render(context) ?? (primary ? mapped["image"]?.textValue : nil))?.nilUnlessWebURL

        var fieldList: [(name: String, value: String, inline: Bool)] = []
        switch fields {
        case .none: break
        case .mapped:
            for member in mapped where !["title", "summary", "url", "thumbnail", "image"].contains(member.key) && !member.value.isNull {
                let value = member.value.textValue
                fieldList.append((member.key, value, TextLimits.length(value) <= 40))
            }
        case .list(let specs):
            for spec in specs {
                let value = spec.value.render(context)
                fieldList.append((spec.name.render(context), value, spec.inline ?? (TextLimits.length(value) <= 40)))
            }
        }
        let cleaned = fieldList.map { field in
            (
                name: TextLimits.truncate(field.name.isEmpty ? "\u{200B}" : field.name, to: Limit.fieldName),
                value: TextLimits.truncate(field.value.isEmpty ? "—" : field.value, to: Limit.fieldValue), inline: field.inline
            )
        }

        guard split else {
            embed.description = TextLimits.truncate(descriptionText, to: Limit.description)
            embed.fields = Array(cleaned.prefix(Limit.fields))
            return [embed]
        }
        // Overflow continues in further embeds (same colour, no title): the description in chunks, then the fields.
        let chunks = TextLimits.split(descriptionText, maximumLength: Limit.description)
        embed.description = chunks.first ?? ""
        var result = [embed]
        for chunk in chunks.dropFirst() {
            var more = Embed()
            more.description = chunk
            more.color = embed.color
            result.append(more)
        }
        // Fields in groups of at most 25 that fit one message with room to spare; the first group joins the first embed
        // when it fits there.
        var groups: [[(name: String, value: String, inline: Bool)]] = [[]]
        var runningSize = 0
        for field in cleaned {
            let cost = TextLimits.length(field.name) + TextLimits.length(field.value)
            if groups[groups.count - 1].count == Limit.fields || runningSize + cost > Limit.embedTotal / 2 {
                groups.append([])
                runningSize = 0
            }
            groups[groups.count - 1].append(field)
            runningSize += cost
        }
        groups.removeAll { $0.isEmpty }
        if let firstGroup = groups.first, result.count == 1, result[0].size + groupSize(firstGroup) <= Limit.embedTotal {
            result[0].fields = firstGroup
            groups.removeFirst()
        }
        for group in groups {
            var more = Embed()
            more.color = embed.color
            more.fields = group
            result.append(more)
        }
        return result
    }
}

private func groupSize(_ fields: [(name: String, value: String, inline: Bool)]) -> Int {
    fields.reduce(0) { $0 + TextLimits.length($1.name) + TextLimits.length($1.value) }
}

/// An embed being built, with the text that counts towards Discord's 6000-character message total.
struct Embed {
    var title = ""
    var description = ""
    var url: String?
    var color: Int?
    var timestamp: String?
    var author = ""
    var authorURL: String?
    var authorIcon: String?
    var footer = ""
    var footerIcon: String?
    var thumbnail: String?
    var image: String?
    var fields: [(name: String, value: String, inline: Bool)] = []

    /// The characters this embed counts towards the message total.
    var size: Int {
        TextLimits.length(title) + TextLimits.length(description) + TextLimits.length(footer) + TextLimits.length(author)
            + fields.reduce(0) { $0 + TextLimits.length($1.name) + TextLimits.length($1.value) }
    }

    /// The embed within `budget` characters (fields dropped, then the description cut, then footer, author and title), or
    /// nil when not even a cut-down version fits.
    func fitted(to budget: Int) -> (json: JSONValue, size: Int)? {
        var embed = self
        func size() -> Int {
            TextLimits.length(embed.title) + TextLimits.length(embed.description) + TextLimits.length(embed.footer)
                + TextLimits.length(embed.author) + embed.fields.reduce(0) { $0 + TextLimits.length($1.name) + TextLimits.length($1.value) }
        }
        let fixed = TextLimits.length(embed.title) + TextLimits.length(embed.footer) + TextLimits.length(embed.author)
        // The description comes before the fields: fields are dropped before the description is cut.
        let wanted = fixed + TextLimits.length(embed.description)
        var kept: [(name: String, value: String, inline: Bool)] = []
        var used = wanted
        for field in embed.fields {
            let cost = TextLimits.length(field.name) + TextLimits.length(field.value)
            if used + cost > budget { break }
            used += cost
            kept.append(field)
        }
        embed.fields = kept
        if size() > budget {
            let room = budget - (size() - TextLimits.length(embed.description))
            embed.description = room > 0 ? TextLimits.truncate(embed.description, to: room) : ""
        }
        if size() > budget { embed.footer = "" }
        if size() > budget { embed.author = "" }
        if size() > budget {
            embed.title = TextLimits.truncate(embed.title, to: max(0, budget - (size() - TextLimits.length(embed.title))))
        }
        let total = size()
        guard total <= budget, total > 0 || embed.image != nil || embed.thumbnail != nil else { return nil }
        return (embed.json, total)
    }

    var json: JSONValue {
        var object = JSONObject()
        if !title.isEmpty { object["title"] = .string(title) }
        if !description.isEmpty { object["description"] = .string(description) }
        if let url { object["url"] = .string(url) }
        if let color { object["color"] = .int(color) }
        if let timestamp { object["timestamp"] = .string(timestamp) }
        if !author.isEmpty {
            var value = JSONObject()
            value["name"] = .string(author)
            if let authorURL { value["url"] = .string(authorURL) }
            if let authorIcon { value["icon_url"] = .string(authorIcon) }
            object["author"] = .object(value)
        }
        if !footer.isEmpty {
            var value = JSONObject()
            value["text"] = .string(footer)
            if let footerIcon { value["icon_url"] = .string(footerIcon) }
            object["footer"] = .object(value)
        }
        if let thumbnail { object["thumbnail"] = ["url": .string(thumbnail)] }
        if let image { object["image"] = ["url": .string(image)] }
        if !fields.isEmpty {
            object["fields"] = .array(fields.map { ["name": .string($0.name), "value": .string($0.value), "inline": .bool($0.inline)] })
        }
        return .object(object)
    }
}

extension String {
    fileprivate var nilUnlessWebURL: String? { DiscordFormatter.isWebURL(self) ? self : nil }
}
