import Foundation
import PluginKit
import TestSupport
import Testing

@testable import Host

/// The shipped formatters, loaded from their `.so` files and called through the ABI exactly as the server does.
@Suite("Formatter plugins")
struct FormatterTests {
    func instance(_ name: String, _ options: JSONValue = [:]) async throws -> PluginInstance {
        try await pluginInstance(try #require(await shippedPlugins().plugins[name]), options: options)
    }

    struct Sent {
        var body: [UInt8]
        var contentType: String
        var headers: [(name: String, value: String)]
        var json: JSONValue { (try? JSONValue(parsing: body)) ?? .null }
    }

    func format(_ instance: PluginInstance, _ document: JSONValue, body: [UInt8] = [], contentType: String = "application/json")
        async throws -> Sent
    {
        switch await instance.format(document: document.serializedBytes(), body: body, contentType: contentType) {
        case .send(let body, let type, let headers):
            // Valid UTF-8 and valid JSON by an independent reader, whatever the formatter.
            if type == "application/json" || type == OutboundRequest.sequenceContentType {
                #expect(String(validating: body, as: UTF8.self) != nil)
                #expect(
                    (try? JSONSerialization.jsonObject(with: Data(body))) != nil, "not valid JSON: \(String(decoding: body, as: UTF8.self))"
                )
            }
            return Sent(body: body, contentType: type, headers: headers)
        case .skip(let reason):
            throw TimedOut(what: "a request, got skip: \(reason)")
        case .failed(let message, _):
            throw TimedOut(what: "a request, got failure: \(message)")
        case .aborted(let reason), .unavailable(let reason):
            throw TimedOut(what: "a request, got a crash: \(reason)")
        case .cancelled:
            throw TimedOut(what: "a request, got a cancellation")
        }
    }

    static func event(fields: JSONValue, payload: JSONValue = ["a": ["b": "deep"]], source: String = "github") -> JSONValue {
        [
            "id": "0193aaaa-bbbb-7ccc-8ddd-eeeeffff0000", "source": .string(source), "received_at": "2026-11-21T12:00:00.123Z",
            "headers": ["x-github-event": "push"], "payload": payload, "fields": fields, "destination": ["name": "d"], "attempt": 1,
        ]
    }

    // MARK: Discord

    @Test("discord: an embed with title, description, url, fields, timestamp and colour, and no mentions allowed")
    func discordRepresentative() async throws {
        let discord = try await instance(
            "discord",
            [
                "username": "Deploys", "color": "#ff0000", "title": "{{fields.repo}}: {{fields.action}}",
                "description": "by {{fields.actor}}", "url": "{{fields.link}}",
            ])
        let message = try await format(
            discord, Self.event(fields: ["repo": "acme/api", "action": "opened", "actor": "@everyone", "link": "https://example.com/pr/1"])
        ).json
        #expect(message["username"] == "Deploys")
        #expect(message["allowed_mentions"] == ["parse": []])
        let embed = try #require(message["embeds"]?.arrayValue?.first)
        #expect(embed["title"] == "acme/api: opened")
        #expect(embed["description"] == "by @everyone")
        #expect(embed["url"] == "https://example.com/pr/1")
        #expect(embed["color"] == .number("16711680"))
        #expect(embed["timestamp"] == "2026-11-21T12:00:00.123Z")
        let names = embed["fields"]?.arrayValue?.compactMap { $0["name"]?.stringValue }
        #expect(names == ["repo", "action", "actor", "link"])
    }

    @Test("discord: bad options are refused with the option's name")
    func discordBadOptions() async throws {
        await #expect(throws: PluginInstanceError.self) { try await instance("discord", ["colour": "red"]) }
        do {
            _ = try await instance("discord", ["colour": "red"])
        } catch let error as PluginInstanceError {
            #expect(error.message == "discord: unknown option 'colour' (did you mean 'color'?)")
        }
        do {
            _ = try await instance("discord", ["color": "crimson"])
        } catch let error as PluginInstanceError {
            #expect(error.message.contains("option 'color'"))
        }
    }

    @Test("discord: long, multi-line and non-ASCII input always fits every Discord limit, cut between characters")
    func discordLimits() async throws {
        let discord = try await instance(
            "discord",
            ["title": "{{fields.title}}", "description": "{{fields.body}}", "content": "{{fields.body}}", "footer": "{{fields.body}}"])
        var generator = SystemRandomNumberGenerator()
        for round in 0..<40 {
            var fields = JSONObject()
            fields["title"] = .string(RandomText.make(maximumLength: 400, using: &generator))
            fields["body"] = .string(RandomText.make(maximumLength: round % 3 == 0 ? 6000 : 300, using: &generator))
            for index in 0..<Int.random(in: 0...40, using: &generator) {
                fields["f\(index)-" + RandomText.make(maximumLength: 3, using: &generator)] = .string(
                    RandomText.make(maximumLength: 700, using: &generator))
            }
            let message = try await format(discord, Self.event(fields: .object(fields))).json
            let embed = try #require(message["embeds"]?.arrayValue?.first)
            func length(_ value: JSONValue?) -> Int { value?.stringValue?.utf16.count ?? 0 }
            #expect(length(message["content"]) <= 2000)
            #expect(length(embed["title"]) <= 256)
            #expect(length(embed["description"]) <= 4096)
            #expect(length(embed["footer"]?["text"]) <= 2048)
            let embedFields = embed["fields"]?.arrayValue ?? []
            #expect(embedFields.count <= 25)
            var total = length(embed["title"]) + length(embed["description"]) + length(embed["footer"]?["text"])
            for field in embedFields {
                #expect(length(field["name"]) <= 256 && length(field["name"]) > 0)
                #expect(length(field["value"]) <= 1024 && length(field["value"]) > 0)
                total += length(field["name"]) + length(field["value"])
            }
            #expect(total <= 6000)
            let title = try #require(embed["title"]?.stringValue)
            let original = fields["title"]!.stringValue!
            if title != original && !original.isEmpty {
                #expect(title.hasSuffix("…") && original.hasPrefix(String(title.dropLast())), "title cut inside a character")
            }
        }
    }

    @Test("discord: several embeds, author, thumbnail, image, colour by a field's value, thread name")
    func discordComplete() async throws {
        let discord = try await instance(
            "discord",
            [
                "username": "CI", "thread_name": "{{fields.repo}} builds",
                "embeds": [
                    [
                        "title": "{{fields.title}}", "author": ["name": "{{fields.actor}}", "icon_url": "{{fields.avatar}}"],
                        "thumbnail_url": "{{fields.avatar}}", "image_url": "https://img.example/{{fields.n}}.png",
                        "color_by": ["field": "status", "colors": ["passed": "#00ff00", "failed": "#ff0000"], "default": "#999999"],
                        "fields": [["name": "Branch", "value": "{{fields.branch}}", "inline": true]],
                        "footer": "build {{fields.n}}", "footer_icon_url": "https://img.example/logo.png",
                    ],
                    ["description": "second embed for {{fields.repo}}", "color": "#0000ff", "timestamp": false],
                ],
            ])
        func message(status: String) async throws -> JSONValue {
            try await format(
                discord,
                Self.event(fields: [
                    "title": "Build 7", "actor": "octocat", "avatar": "https://avatars.example/o.png", "n": 7, "branch": "main",
                    "repo": "acme/api", "status": .string(status),
                ])
            ).json
        }
        let failed = try await message(status: "failed")
        #expect(failed["thread_name"] == "acme/api builds")
        let embeds = try #require(failed["embeds"]?.arrayValue)
        #expect(embeds.count == 2)
        #expect(embeds[0]["title"] == "Build 7")
        #expect(embeds[0]["author"] == ["name": "octocat", "icon_url": "https://avatars.example/o.png"])
        #expect(embeds[0]["thumbnail"] == ["url": "https://avatars.example/o.png"])
        #expect(embeds[0]["image"] == ["url": "https://img.example/7.png"])
        #expect(embeds[0]["color"] == .int(0xFF0000))
        #expect(embeds[0]["fields"] == [["name": "Branch", "value": "main", "inline": true]])
        #expect(embeds[0]["footer"] == ["text": "build 7", "icon_url": "https://img.example/logo.png"])
        #expect(embeds[1]["description"] == "second embed for acme/api")
        #expect(embeds[1]["color"] == .int(0x0000FF))
        #expect(embeds[1]["timestamp"] == nil)
        #expect(try await message(status: "passed")["embeds"]?.arrayValue?.first?["color"] == .int(0x00FF00))
        #expect(try await message(status: "odd")["embeds"]?.arrayValue?.first?["color"] == .int(0x999999))
        // Without any colour option, a mapped `status` picks the palette colour.
        let plain = try await format(try await instance("discord"), Self.event(fields: ["title": "x", "status": "failure"])).json
        #expect(plain["embeds"]?.arrayValue?.first?["color"] == .int(0xE74C3C))
        await #expect(throws: PluginInstanceError.self) { try await instance("discord", ["embeds": [["title": "a"]], "title": "b"]) }
        await #expect(throws: PluginInstanceError.self) { try await instance("discord", ["color_by": ["colors": ["a": "#fff"]]]) }
        await #expect(throws: PluginInstanceError.self) { try await instance("discord", ["author": ["url": "https://x"]]) }
    }

    @Test("discord: mentions come from the options only; payload text in content cannot ping")
    func discordMentions() async throws {
        let discord = try await instance(
            "discord",
            ["content": "deploy by {{fields.actor}}", "mentions": ["users": ["80351110224678912"], "roles": ["41771983423143936"]]])
        let message = try await format(discord, Self.event(fields: ["actor": "@everyone <@1234>"])).json
        #expect(message["content"] == .string("<@80351110224678912> <@&41771983423143936> deploy by @\u{200B}everyone <@\u{200B}1234>"))
        #expect(message["allowed_mentions"] == ["parse": [], "users": ["80351110224678912"], "roles": ["41771983423143936"]])
        let everyone = try await format(try await instance("discord", ["mentions": ["everyone": true]]), Self.event(fields: [:])).json
        #expect(everyone["content"] == "@everyone")
        #expect(everyone["allowed_mentions"] == ["parse": ["everyone"]])
        await #expect(throws: PluginInstanceError.self) { try await instance("discord", ["mentions": ["users": ["@bob"]]]) }
    }

    @Test("discord: overflow split keeps a long description whole across further embeds")
    func discordSplit() async throws {
        let discord = try await instance("discord", ["overflow": "split", "description": "{{fields.log}}", "fields": false])
        var generator = SystemRandomNumberGenerator()
        var log = ""
        while log.utf16.count < 5000 { log += RandomText.make(maximumLength: 40, using: &generator) + "\n" }
        let message = try await format(discord, Self.event(fields: ["log": .string(log)])).json
        let embeds = try #require(message["embeds"]?.arrayValue)
        #expect(embeds.count == 2)
        #expect(embeds.compactMap { $0["description"]?.stringValue }.joined() == log, "text was lost or changed in the split")
        let truncated = try await format(
            try await instance("discord", ["description": "{{fields.log}}"]), Self.event(fields: ["log": .string(log)])
        )
        .json
        #expect(truncated["embeds"]?.arrayValue?.count == 1)
        #expect(truncated["embeds"]?.arrayValue?.first?["description"]?.stringValue?.hasSuffix("…") == true)
    }

    @Test("discord: with several embeds and split overflow, random input still fits every limit of the whole message")
    func discordMessageLimits() async throws {
        let discord = try await instance(
            "discord",
            [
                "overflow": "split", "content": "{{fields.body}}", "username": "{{fields.title}}",
                "embeds": [
                    [
                        "title": "{{fields.title}}", "description": "{{fields.body}}", "author": ["name": "{{fields.title}}"],
                        "footer": "{{fields.body}}",
                    ],
                    ["title": "{{fields.title}}", "description": "{{fields.body}}", "fields": true],
                    ["description": "{{fields.body}}"],
                ],
            ])
        var generator = SystemRandomNumberGenerator()
        for round in 0..<30 {
            var fields = JSONObject()
            fields["title"] = .string(RandomText.make(maximumLength: 400, using: &generator))
            fields["body"] = .string(RandomText.make(maximumLength: round % 2 == 0 ? 9000 : 500, using: &generator))
            for index in 0..<Int.random(in: 0...60, using: &generator) {
                fields["f\(index)"] = .string(RandomText.make(maximumLength: 900, using: &generator))
            }
            let sent = try await format(discord, Self.event(fields: .object(fields)))
            // Several messages come as one sequence document; each must be a valid Discord message on its own.
            let messages: [JSONValue] =
                sent.contentType == OutboundRequest.sequenceContentType
                ? try #require(OutboundRequest.requests(inSequence: sent.body)).map { try JSONValue(parsing: $0.body) } : [sent.json]
            #expect((1...10).contains(messages.count))
            func length(_ value: JSONValue?) -> Int { value?.stringValue?.utf16.count ?? 0 }
            for (index, message) in messages.enumerated() {
                #expect(length(message["content"]) <= 2000)
                #expect(index == 0 || message["content"] == nil, "content repeated in a later message")
                #expect(length(message["username"]) <= 80)
                let embeds = message["embeds"]?.arrayValue ?? []
                #expect(embeds.count <= 10 && !embeds.isEmpty)
                var total = 0
                for embed in embeds {
                    #expect(length(embed["title"]) <= 256)
                    #expect(length(embed["description"]) <= 4096)
                    #expect(length(embed["footer"]?["text"]) <= 2048)
                    #expect(length(embed["author"]?["name"]) <= 256)
                    let embedFields = embed["fields"]?.arrayValue ?? []
                    #expect(embedFields.count <= 25)
                    total +=
                        length(embed["title"]) + length(embed["description"]) + length(embed["footer"]?["text"])
                        + length(embed["author"]?["name"])
                    for field in embedFields {
                        #expect(length(field["name"]) <= 256 && length(field["value"]) <= 1024)
                        total += length(field["name"]) + length(field["value"])
                    }
                }
                #expect(total <= 6000)
            }
        }
    }

    // MARK: Slack

    @Test("slack: a text fallback and header, section, fields and context blocks with mrkdwn escaped")
    func slackRepresentative() async throws {
        let slack = try await instance("slack", ["title": "{{fields.repo}}", "description": "<{{fields.link}}|open> by {{fields.actor}}"])
        let message = try await format(
            slack, Self.event(fields: ["repo": "acme/api", "actor": "<!channel> & co", "link": "https://x.test/1"])
        )
        .json
        #expect(message["text"] == "acme/api")
        let blocks = try #require(message["blocks"]?.arrayValue)
        #expect(blocks.map { $0["type"]?.stringValue ?? "" } == ["header", "section", "section", "context"])
        #expect(blocks[0]["text"]?["text"] == "acme/api")
        #expect(blocks[1]["text"]?["text"] == "<https://x.test/1|open> by &lt;!channel&gt; &amp; co")
        let fieldTexts = blocks[2]["fields"]?.arrayValue?.compactMap { $0["text"]?.stringValue }
        #expect(fieldTexts?.contains("*actor*\n&lt;!channel&gt; &amp; co") == true)
    }

    @Test("slack: long and non-ASCII input always fits Slack's Block Kit limits")
    func slackLimits() async throws {
        let slack = try await instance("slack", ["title": "{{fields.title}}", "description": "{{fields.body}}", "text": "{{fields.body}}"])
        var generator = SystemRandomNumberGenerator()
        for round in 0..<40 {
            var fields = JSONObject()
            fields["title"] = .string(RandomText.make(maximumLength: 300, using: &generator))
            fields["body"] = .string(RandomText.make(maximumLength: round % 3 == 0 ? 5000 : 200, using: &generator))
            // Round 0 has more fields than 50 blocks can hold (short ones: a megabyte of them made this the suite's
            // heaviest test); the others vary lengths.
            for index in 0..<(round == 0 ? 520 : Int.random(in: 0...30, using: &generator)) {
                fields["k\(index)"] = .string(
                    RandomText.make(maximumLength: round % 5 == 0 && round > 0 ? 1200 : 8, using: &generator))
            }
            let message = try await format(slack, Self.event(fields: .object(fields))).json
            let blocks = try #require(message["blocks"]?.arrayValue)
            #expect(blocks.count <= 50)
            for block in blocks {
                switch block["type"]?.stringValue {
                case "header": #expect((block["text"]?["text"]?.stringValue?.utf16.count ?? 0) <= 150)
                case "section":
                    #expect((block["text"]?["text"]?.stringValue?.utf16.count ?? 0) <= 3000)
                    let sectionFields = block["fields"]?.arrayValue ?? []
                    #expect(sectionFields.count <= 10)
                    for field in sectionFields { #expect((field["text"]?.stringValue?.utf16.count ?? 0) <= 2000) }
                case "context": #expect((block["elements"]?.arrayValue?.first?["text"]?.stringValue?.utf16.count ?? 0) <= 2000)
                default: Issue.record("unexpected block \(block)")
                }
            }
            // A cut header is a prefix of whole characters of the title, plus the ellipsis.
            let header = try #require(blocks.first?["text"]?["text"]?.stringValue)
            let title = fields["title"]!.stringValue!
            if header != title, !title.isEmpty {
                #expect(header.hasSuffix("…") && title.hasPrefix(String(header.dropLast())), "header cut inside a character")
            }
            // No entity cut in half at a truncation point, in any mrkdwn text.
            let mrkdwn =
                blocks.compactMap { $0["text"] }.filter { $0["type"] == "mrkdwn" }
                + blocks.flatMap { $0["fields"]?.arrayValue ?? [] }
            for text in mrkdwn.compactMap({ $0["text"]?.stringValue }) {
                if let amp = text.lastIndex(of: "&") {
                    #expect(text[amp...].contains(";"), "cut entity in \(text.suffix(20).debugDescription)")
                }
            }
        }
    }

    @Test("slack: the link to the mapped url, and the legacy colour bar by a field's value")
    func slackLinkAndColour() async throws {
        let slack = try await instance("slack", ["link_text": "View run", "color_by": "status"])
        let message = try await format(
            slack, Self.event(fields: ["title": "CI failed", "url": "https://ci.example/1", "status": "failure"])
        ).json
        let attachment = try #require(message["attachments"]?.arrayValue?.first)
        #expect(attachment["color"] == "#e74c3c")
        let section = try #require(attachment["blocks"]?.arrayValue?.first { $0["type"] == "section" && $0["text"] != nil })
        #expect(section["text"]?["text"] == "<https://ci.example/1|View run>")
        #expect(message["text"] == "CI failed")
        // Without a colour option, no attachment: plain blocks.
        let plain = try await format(try await instance("slack"), Self.event(fields: ["title": "x", "status": "failure"])).json
        #expect(plain["attachments"] == nil && plain["blocks"] != nil)
        await #expect(throws: PluginInstanceError.self) { try await instance("slack", ["color": "blue"]) }
    }

    // MARK: Generic

    @Test("generic raw: the original body and content type, byte for byte, even when not UTF-8")
    func genericRaw() async throws {
        let generic = try await instance("generic")
        let body: [UInt8] = [0xFF, 0x00, 0xC3, 0x28, 0x7B]
        let sent = try await format(generic, Self.event(fields: [:]), body: body, contentType: "application/octet-stream; x=1")
        #expect(sent.body == body)
        #expect(sent.contentType == "application/octet-stream; x=1")
    }

    @Test("generic envelope: the event document; template: valid JSON whatever the field contents")
    func genericEnvelopeAndTemplate() async throws {
        let document = Self.event(fields: ["repo": "a\"b\n😀\\", "n": 5])
        let envelope = try await format(try await instance("generic", ["mode": "envelope", "headers": ["X-Env": "prod"]]), document)
        #expect(envelope.json == document)
        #expect(envelope.headers.map { "\($0.name)=\($0.value)" } == ["X-Env=prod"])
        let template = try await instance(
            "generic", ["mode": "template", "template": ["text": "repo {{fields.repo}}", "n": "{{fields.n}}"]])
        let rendered = try await format(template, document).json
        #expect(rendered["text"] == .string("repo a\"b\n😀\\"))
        #expect(rendered["n"] == .number("5"))
        await #expect(throws: PluginInstanceError.self) { try await instance("generic", ["mode": "template"]) }
        await #expect(throws: PluginInstanceError.self) { try await instance("generic", ["mode": "sideways"]) }
    }

    @Test("generic template: random field contents (quotes, newlines, controls, emoji, combining marks) always give valid JSON")
    func genericTemplateProperty() async throws {
        let template = try await instance(
            "generic",
            [
                "mode": "template",
                "template": ["text": "{{fields.a}} and {{fields.b}}", "raw": "{{fields.a}}", "nested": ["x": ["{{fields.b}}"]]],
            ])
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let a = RandomText.make(maximumLength: 200, using: &generator)
            let b = RandomText.make(maximumLength: 50, using: &generator)
            // format() checks the body with an independent JSON parser.
            let rendered = try await format(template, Self.event(fields: ["a": .string(a), "b": .string(b)])).json
            #expect(rendered["text"] == .string(a + " and " + b))
            #expect(rendered["raw"] == .string(a))
        }
    }

    @Test("one template renders the same text in all three formatters")
    func templatesAgree() async throws {
        let template = "{{fields.repo}} {{payload.a.b}} {{source}} {{id}}"
        let document = Self.event(fields: ["repo": "acme/api"])
        let expected = "acme/api deep github 0193aaaa-bbbb-7ccc-8ddd-eeeeffff0000"
        let discord = try await format(try await instance("discord", ["title": .string(template)]), document).json
        let slack = try await format(try await instance("slack", ["title": .string(template)]), document).json
        let generic = try await format(try await instance("generic", ["mode": "template", "template": ["t": .string(template)]]), document)
            .json
        #expect(discord["embeds"]?.arrayValue?.first?["title"] == .string(expected))
        #expect(slack["blocks"]?.arrayValue?.first?["text"]?["text"] == .string(expected))
        #expect(generic["t"] == .string(expected))
    }
}

/// A formatter that sends several requests for one event, through the server: all of them in order, each with its own
/// webhook-id, and a retry that resumes at the first one not delivered.
@Suite("Multi-request deliveries")
struct MultiRequestTests {
    @Test("Discord overflow split: a long text goes out as several messages in order; a retry resends only what failed")
    func splitAcrossMessages() async throws {
        let sink = RecordingSink()
        sink.plan("/d", statuses: [204, 204, 500])
        try await sink.start()
        let yaml =
            testServerSection()
                + """
                destinations:
                  d: { formatter: discord, url: "\(sink.url)/d", options: { overflow: split, description: "{{fields.log}}", fields: false } }
                sources:
                  ci: { destinations: [d], mapping: { log: "$.log" } }
                """
        let server = try await TestServer.start(yaml: yaml)
        var generator = SystemRandomNumberGenerator()
        var log = ""
        while log.utf16.count < 20_000 { log += RandomText.make(maximumLength: 60, using: &generator) + "\n" }
        let body = JSONValue.object(JSONObject([("log", .string(log))])).serialized()
        let id = try #require(try await server.post("ci", json: body).json?["id"]?.stringValue)
        try await server.waitForDeliveries(of: id)

        let sent = sink.requests("/d")
        let delivery = try #require(try await server.detail(id)?.deliveries.first)
        // Messages 1 and 2 were delivered, 3 failed once (500), then 3.. were sent again: 1 and 2 never twice.
        let ids = sent.compactMap { $0.header("webhook-id") }
        let messages = Set(ids).count
        #expect(messages >= 4, "expected the text in at least 4 messages, got \(messages)")
        #expect(ids.count == messages + 1, "only the failed message is sent twice: \(ids)")
        #expect(Array(ids.prefix(3)) == [delivery.id, "\(delivery.id)-1", "\(delivery.id)-2"])
        #expect(ids[3] == "\(delivery.id)-2")
        #expect(delivery.history.count == 2)
        #expect(delivery.history[0].httpStatus == 500)
        #expect(delivery.lastError == "request 3 of \(messages): destination answered HTTP 500")
        // Every message is within Discord's limits, and together they hold the whole text, in order.
        var seen = Set<String>()
        var text = ""
        for request in sent {
            guard let webhookID = request.header("webhook-id"), seen.insert(webhookID).inserted else { continue }
            let message = try #require(request.json)
            let embeds = message["embeds"]?.arrayValue ?? []
            #expect(embeds.count <= 10)
            #expect(
                embeds.reduce(0) {
                    $0 + ($1["description"]?.stringValue?.utf16.count ?? 0) + ($1["title"]?.stringValue?.utf16.count ?? 0)
                        + ($1["footer"]?["text"]?.stringValue?.utf16.count ?? 0)
                } <= 6000)
            text += embeds.compactMap { $0["description"]?.stringValue }.joined()
        }
        #expect(text == log, "text was lost or reordered across messages")
        try await server.stop()
        try await sink.stop()
    }
}
