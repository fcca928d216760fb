import PluginKit
import Testing

@testable import Host

/// The spliced event document (no parse, no re-serialisation) must be the same JSON as the one built from values.
@Suite("Event document")
struct EventDocumentTests {
    static let cases: [(contentType: String, body: String)] = [
        ("application/json", #"{"a":1,"b":[true,false,null],"c":{"d":"x\"y\\z\n"},"e":-0.5e+3}"#),
        ("application/json; charset=utf-8", "  [1, 2 ,3]\n"),
        ("application/cloudevents+json", #"{"name":"Zoë 🚀","n":0}"#),
        ("application/json", #""just a string""#),
        ("text/plain", #""just a string""#),
        ("text/plain", #"{"looks":"like json"}"#),
        ("", "\t{\"k\":[]}"),
        ("application/json", #"{"escaped":"\u00e9\ud83d\ude80"}"#),
        ("application/json", #"{"broken":"#),
        ("application/json", #"{"a":01}"#),
        ("application/json", #"{"a":1} trailing"#),
        ("application/json", ""),
        ("application/x-www-form-urlencoded", "payload=%7B%22a%22%3A1%7D"),
        ("application/x-www-form-urlencoded", "a=1&b=two+words"),
        ("application/octet-stream", "\u{1}\u{2}binary"),
        ("application/json", String(repeating: "[", count: 300) + String(repeating: "]", count: 300)),
    ]

    @Test("spliced and built documents are the same JSON, for every kind of body", arguments: cases.indices)
    func splicedEqualsBuilt(index: Int) throws {
        let (contentType, body) = Self.cases[index]
        let event = StoredEvent(
            id: "01a20019-a924-731c-8893-53404d8a8a31", source: "src \"quoted\"", receivedAt: 1_795_000_000_123,
            contentType: contentType, headersJSON: #"{"x-one":"1","content-type":"\#(contentType)"}"#, body: Array(body.utf8),
            fieldsJSON: #"{"title":"T","n":3}"#)
        let spliced = try JSONValue(parsing: EventDocument.bytes(event: event, destination: "chat", attempt: 2))
        let built = EventDocument.make(event: event, destination: "chat", attempt: 2)
        #expect(spliced == built, "content type \(contentType), body \(body.prefix(40))")
    }

    @Test("the validator accepts exactly what the parser accepts, or sends the document to the parser")
    func validatorNeverAcceptsWhatTheParserRejects() {
        let documents = [
            "{}", "[]", "0", "-0", "1.5", "1e5", "1E-5", "true", "null", #""s""#, #"{"a":[1,{"b":null}]}"#,
            "01", "1.", ".5", "-", "+1", "1e", "tru", "nul", "[1,]", "{\"a\"}", "{\"a\":}", "{,}", "[", "\"\u{1}\"", "\"\\x\"",
            "{\"a\":1}}", "  ", "",
        ]
        for text in documents {
            let parsed = (try? JSONValue(parsing: text)) != nil
            let valid = JSONValue.isPlainValidDocument(Array(text.utf8))
            #expect(!valid || parsed, "validator accepted what the parser rejects: \(text)")
            #expect(valid == parsed, "validator and parser disagree on \(text)")
        }
    }
}
