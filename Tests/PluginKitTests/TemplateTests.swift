import PluginKit
import TestSupport
import Testing

@Suite("Templates and text limits")
struct TemplateTests {
    let context: JSONValue = [
        "id": "e1", "source": "github",
        "fields": ["repo": "acme/api", "count": 3],
        "payload": ["a": ["b": "deep"], "list": ["x", "y"]],
        "headers": ["x-github-event": "push"],
    ]

    @Test("placeholders read fields, payload paths, headers, source and id")
    func rendersPlaceholders() throws {
        let template = try Template(
            "{{fields.repo}} {{ payload.a.b }} {{payload.list.1}} {{headers.x-github-event}} {{source}} {{id}} {{fields.count}}")
        #expect(template.render(context) == "acme/api deep y push github e1 3")
    }

    @Test("a missing path renders empty, and escaping applies to inserted values only")
    func escapingAndMissing() throws {
        let template = try Template("<{{fields.none}}|{{fields.repo}}>")
        #expect(template.render(context) { $0.uppercased() } == "<|ACME/API>")
    }

    @Test("an unclosed placeholder is an error that names the template")
    func malformed() {
        #expect(throws: TemplateError.self) { try Template("hello {{fields.repo") }
        #expect(throws: TemplateError.self) { try Template("{{ }}") }
    }

    @Test("JSON templates keep the type of a lone placeholder and stay valid JSON with hostile text")
    func jsonTemplate() throws {
        let template = try JSONTemplate(["count": "{{fields.count}}", "text": "repo {{fields.repo}}!", "all": "{{fields}}", "n": 1])
        let hostile: JSONValue = ["fields": ["count": 3, "repo": "a\"b\n\\c 😀"]]
        let rendered = template.render(hostile)
        #expect(rendered["count"] == .number("3"))
        #expect(rendered["text"] == .string("repo a\"b\n\\c 😀!"))
        #expect(rendered["all"] == hostile["fields"])
        #expect(try JSONValue(parsing: rendered.serialized()) == rendered)
    }

    @Test("truncation keeps text that fits and cuts only between characters, ending with an ellipsis")
    func truncation() {
        #expect(TextLimits.truncate("short", to: 10) == "short")
        #expect(TextLimits.truncate("abcdefghij", to: 5) == "abcd…")
        #expect(TextLimits.truncate("👩‍👩‍👧‍👦👩‍👩‍👧‍👦", to: 12) == "👩‍👩‍👧‍👦…")
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let text = RandomText.make(maximumLength: 300, using: &generator)
            let limit = Int.random(in: 1...400, using: &generator)
            let cut = TextLimits.truncate(text, to: limit)
            #expect(cut.utf16.count <= limit)
            if cut != text {
                #expect(cut.hasSuffix("…"))
                #expect(
                    text.hasPrefix(String(cut.dropLast())), "cut inside a character: \(text.debugDescription) -> \(cut.debugDescription)")
            }
        }
    }
}
