import Foundation
import PluginKit
import TestSupport
import Testing

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

    @Test("paths follow members and array indexes")
    func paths() throws {
        let value = try JSONValue(parsing: #"{"a":{"b":[{"c":"x"}]}}"#)
        #expect(value.value(atPath: "a.b.0.c") == "x")
        #expect(value.value(atPath: "a.b.1.c") == nil)
        #expect(value.value(atPath: "a.missing") == nil)
    }
}
