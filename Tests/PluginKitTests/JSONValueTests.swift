import Foundation
import TestSupport
import Testing

@testable import PluginKit

@Suite("JSON values")
struct JSONValueTests {
    @Test("an object keeps order and finds, replaces and removes members the same below and above its index's size")
    func objectAcrossIndexSize() {
        // A reference kept as a plain list, against random sets and removals on 20 keys (about 13 present at a time), so that objects
        // grow past the size where lookups start using an index and shrink back below it, many times.
        var generator = SystemRandomNumberGenerator()
        var object = JSONObject()
        var reference: [(key: String, value: JSONValue)] = []
        var mismatches: [String] = []
        for step in 0..<3_000 {
            let key = "k\(Int.random(in: 0..<20, using: &generator))"
            if Int.random(in: 0..<3, using: &generator) == 0 {
                object[key] = nil
                reference.removeAll { $0.key == key }
            } else {
                let value = JSONValue.number("\(step)")
                object[key] = value
                if let position = reference.firstIndex(where: { $0.key == key }) {
                    reference[position].value = value
                } else {
                    reference.append((key, value))
                }
            }
            let probe = "k\(Int.random(in: 0..<22, using: &generator))"
            if object[probe] != reference.first(where: { $0.key == probe })?.value
                || object.keys != reference.map(\.key) || object.count != reference.count
            {
                mismatches.append("step \(step): \(key), probe \(probe)")
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(5))")
    }

    @Test("parses every JSON type and serialises back to the same compact text")
    func roundTrip() throws {
        let text = #"{"a":[1,-2.5e3,true,false,null],"b":{"c":"d\"e\\f\n\u0001"},"n":12345678901234567890,"u":"é😀"}"#
        let value = try JSONValue(parsing: text)
        #expect(value["n"] == .number("12345678901234567890"))
        #expect(value["u"]?.stringValue == "é😀")
        #expect(value.serialized() == text)
    }

    @Test("decodes escapes, including surrogate pairs, and keeps member order")
    func escapes() throws {
        let value = try JSONValue(parsing: #"{"z":1,"a":"\ud83d\ude00 \u00e9 \/ \t"}"#)
        #expect(value["a"]?.stringValue == "😀 é / \t")
        #expect(value.objectValue?.keys == ["z", "a"])
    }

    @Test(
        "refuses malformed documents with the byte offset",
        arguments: [
            "", "{", "[1,]", "{\"a\" 1}", "tru", "01", "1.", "\"\u{01}\"", "{} x", "\"\\x\"", "[1 2]",
        ])
    func refusesMalformed(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: text) }
    }

    @Test("refuses invalid UTF-8 inside strings")
    func refusesInvalidUTF8() {
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: [0x22, 0xC3, 0x28, 0x22]) }
    }

    @Test("refuses nesting deeper than the limit instead of exhausting the stack")
    func depthLimit() throws {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: deep) }
        let ok = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        _ = try JSONValue(parsing: ok)
    }

    @Test("serialised strings are valid JSON for every kind of character, as Foundation reads them")
    func serialisationIsValidForFoundation() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let text = RandomText.make(maximumLength: 200, using: &generator)
            let value: JSONValue = ["text": .string(text)]
            let data = Data(value.serializedBytes())
            let decoded = try #require(try JSONSerialization.jsonObject(with: data) as? [String: String])
            #expect(decoded["text"] == text)
        }
    }

    @Test("escapes exactly the characters JSON and JavaScript need, in the same spelling")
    func escapeSpelling() {
        let value: JSONValue = .string("q\" b\\ n\n r\r t\t \u{08}\u{0C}\u{1F} \u{2028}\u{2029} \u{2027}é😀")
        #expect(value.serialized() == #""q\" b\\ n\n r\r t\t \u0008\u000c\u001f \u2028\u2029 "# + "\u{2027}é😀\"")
        var text = "x"
        JSONValue.writeString("a\"b", to: &text)
        #expect(text == #"x"a\"b""#)
    }

    @Test("a document read with its payload deferred refuses what the full parse refuses and reads the same when built")
    func deferredPayload() throws {
        var payloads = [
            #"{"a":[1,2,{"b":"c"}],"d":"é😀\u00e9\ud83d\ude00\n","e":-1.5e3,"f":null,"g":true}"#, #""text""#, "12", "null",
            "[]", "{}", #"{"k":"v","k":"w"}"#,
            // What the parser refuses, inside the payload:
            "", "{", "[1,]", #"{"a" 1}"#, "tru", "01", "1.", "\"\u{01}\"", #""\x""#, "[1 2]", #""\u12""#, #""\ud800""#,
            String(repeating: "[", count: 300) + String(repeating: "]", count: 300),
        ]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<100 {
            let text: JSONValue = ["t": .string(RandomText.make(maximumLength: 40, using: &generator))]
            payloads.append(text.serialized())
        }
        var documents = payloads.map { #"{"id":"e1","source":"s","payload":"# + $0 + #","fields":{"x":"1"},"attempt":1}"# }
        documents.append(#"{"id":"e1","fields":{"payload":{"nested":1}}}"#)  // no top-level payload; a nested one is built
        documents.append(#"[{"payload":1}]"#)
        var invalidUTF8 = Array(#"{"payload":{"a":""#.utf8)
        invalidUTF8 += [0xC3, 0x28]
        invalidUTF8 += Array(#""},"fields":{}}"#.utf8)
        var inputs = documents.map { Array($0.utf8) }
        inputs.append(invalidUTF8)
        for bytes in inputs {
            let full = Result { try JSONValue(parsing: bytes) }
            let deferred = Result { try bytes.withUnsafeBytes { try JSONValue.parsing($0, deferring: "payload") } }
            switch (full, deferred) {
            case (.success(let document), .success(let (head, payload))):
                let input = PluginInput(head: head, payload: payload, body: [], contentType: "")
                #expect(input.document == document, "\(String(decoding: bytes, as: UTF8.self))")
                #expect(input.payload == (document["payload"] ?? .null))
                #expect(input.fields == (document["fields"]?.objectValue ?? JSONObject()))
                for path in ["payload", "payload.a.2.b", "payload.d", "payload.k", "fields.x", "fields.payload.nested", "id", "0.payload"] {
                    #expect(input.value(atPath: path) == document.value(atPath: path), "\(path)")
                }
            case (.failure, .failure): break
            default:
                Issue.record("full and deferred reading disagree on \(String(decoding: bytes, as: UTF8.self)): \(full) against \(deferred)")
            }
        }
    }

    @Test("paths follow members and array indexes")
    func paths() throws {
        let value = try JSONValue(parsing: #"{"a":{"b":[{"c":"x"}]}}"#)
        #expect(value.value(atPath: "a.b.0.c") == "x")
        #expect(value.value(atPath: "a.b.1.c") == nil)
        #expect(value.value(atPath: "a.missing") == nil)
    }
}
