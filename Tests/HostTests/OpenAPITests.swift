import Foundation
import NIOHTTP1
import PluginKit
import Testing
import Yams

@testable import Host

/// docs/openapi.yaml against the running server: every documented operation is called; every answer's status must be
/// documented for its operation and its JSON body must match the documented schema. The document cannot drift from
/// the code without this failing.
@Suite("OpenAPI conformance")
struct OpenAPITests {
    static let documentPath = TestPaths.packageRoot + "/docs/openapi.yaml"

    /// One request to make, and the documented operation it exercises.
    struct Call {
        var method: HTTPMethod
        var template: String
        var path: String
        var admin = true
        var body = ""
        var headers: [(String, String)] = []
        var authorized = true
    }

    @Test("every documented operation answers as documented")
    func conformance() async throws {
        let document = try Self.load()
        let sink = RecordingSink()
        sink.plan("/broken", statuses: [400, 400, 400])
        try await sink.start()
        let yaml = AdminAPITests.yaml(
            sink: sink.url,
            extra: """
                  limited: { destinations: [out], rate_limit: 1/1h }
                  strict: { destinations: [out], mapping: { repo: { path: "$.repo", required: true } } }
                  keyed: { destinations: [out], idempotency_key: "header:X-Id" }
                """
        )
        .replacingOccurrences(
            of: "  admin_listen: \"127.0.0.1:0\"", with: "  admin_listen: \"127.0.0.1:0\"\n  admin_token: \"t0ken\"\n  max_body_bytes: 4096"
        )
        .replacingOccurrences(
            of: "destinations:\n", with: "destinations:\n  held: { formatter: generic, url: \"\(sink.url)/held\", paused: true }\n")
        let server = try await TestServer.start(yaml: yaml)
        let event = try await AdminAPITests.post(server, "app", #"{"n":1}"#)
        let locked = try await AdminAPITests.post(server, "locked", "{}")
        for id in [event, locked] { try await server.waitForDeliveries(of: id, toBe: [.delivered, .dead]) }
        let signed = Array(#"{"n":2}"#.utf8)
        let json = [("Content-Type", "application/json")]

        let calls: [Call] = [
            Call(
                method: .POST, template: "/webhooks/{source}", path: "/webhooks/app", admin: false, body: #"{"n":2}"#,
                headers: json + [("X-Hub-Signature-256", githubSignature(secret: "verify-secret-7", body: signed))]),
            Call(method: .POST, template: "/webhooks/{source}", path: "/webhooks/app", admin: false, body: "{}", headers: json),
            Call(method: .POST, template: "/webhooks/{source}", path: "/webhooks/nope", admin: false, body: "{}", headers: json),
            Call(method: .POST, template: "/webhooks/{source}", path: "/webhooks/strict", admin: false, body: "{}", headers: json),
            Call(
                method: .POST, template: "/webhooks/{source}", path: "/webhooks/plain", admin: false,
                body: String(repeating: "x", count: 5000)),
            Call(method: .POST, template: "/webhooks/{source}", path: "/webhooks/limited", admin: false, body: "{}", headers: json),
            Call(method: .POST, template: "/webhooks/{source}", path: "/webhooks/limited", admin: false, body: "{}", headers: json),
            Call(
                method: .POST, template: "/webhooks/{source}", path: "/webhooks/keyed", admin: false, body: "{}",
                headers: json + [("X-Id", "k")]),
            Call(
                method: .POST, template: "/webhooks/{source}", path: "/webhooks/keyed", admin: false, body: "{}",
                headers: json + [("X-Id", "k")]),
            Call(method: .GET, template: "/healthz", path: "/healthz", authorized: false),
            Call(method: .GET, template: "/readyz", path: "/readyz"),
            Call(method: .GET, template: "/readyz", path: "/readyz", authorized: false),
            Call(method: .GET, template: "/metrics", path: "/metrics"),
            Call(method: .GET, template: "/admin/events", path: "/admin/events?limit=1"),
            Call(method: .GET, template: "/admin/events", path: "/admin/events?status=bad"),
            Call(method: .GET, template: "/admin/events", path: "/admin/events", authorized: false),
            Call(method: .GET, template: "/admin/events/{id}", path: "/admin/events/\(event)"),
            Call(method: .GET, template: "/admin/events/{id}", path: "/admin/events/nope"),
            Call(method: .POST, template: "/admin/events/{id}/replay", path: "/admin/events/\(event)/replay"),
            Call(method: .POST, template: "/admin/events/{id}/replay", path: "/admin/events/\(locked)/replay"),
            Call(method: .POST, template: "/admin/events/{id}/replay", path: "/admin/events/nope/replay"),
            Call(method: .GET, template: "/admin/deliveries", path: "/admin/deliveries?status=dead"),
            Call(method: .GET, template: "/admin/deliveries", path: "/admin/deliveries?limit=9999"),
            Call(method: .POST, template: "/admin/replay", path: "/admin/replay", body: #"{"status":"dead","dry_run":true}"#),
            Call(method: .POST, template: "/admin/replay", path: "/admin/replay", body: #"{"source":"plain"}"#),
            Call(method: .POST, template: "/admin/replay", path: "/admin/replay", body: "{}"),
            Call(method: .POST, template: "/admin/replay", path: "/admin/replay", body: #"{"source":"locked"}"#),
            Call(method: .GET, template: "/admin/destinations", path: "/admin/destinations"),
            Call(method: .POST, template: "/admin/destinations/{name}/pause", path: "/admin/destinations/out/pause"),
            Call(method: .POST, template: "/admin/destinations/{name}/pause", path: "/admin/destinations/nope/pause"),
            Call(method: .POST, template: "/admin/destinations/{name}/resume", path: "/admin/destinations/out/resume"),
            Call(method: .POST, template: "/admin/destinations/{name}/resume", path: "/admin/destinations/held/resume"),
            Call(method: .GET, template: "/admin/sources", path: "/admin/sources"),
            Call(method: .GET, template: "/admin/plugins", path: "/admin/plugins"),
            Call(method: .GET, template: "/admin/config", path: "/admin/config"),
            Call(method: .POST, template: "/admin/reload", path: "/admin/reload"),
            Call(method: .GET, template: "/admin/config", path: "/admin/config", headers: [("Host", "rebound.example:9090")]),
            Call(method: .POST, template: "/admin/reload", path: "/admin/reload", headers: [("Content-Type", "text/plain")]),
            Call(
                method: .POST, template: "/admin/reload", path: "/admin/reload",
                headers: [("Content-Type", "application/json"), ("Origin", "https://page.example")]),
        ]
        var covered = Set<String>()
        var statuses: [String: Set<Int>] = [:]
        var problems: [String] = []
        func check(_ call: Call) async throws {
            var headers = call.headers
            if call.admin, call.authorized { headers.append(("Authorization", "Bearer t0ken")) }
            if call.admin, call.method == .POST, !headers.contains(where: { $0.0 == "Content-Type" }) {
                headers.append(("Content-Type", "application/json"))
            }
            let response = try await send(
                call.method, (call.admin ? server.adminURL : server.ingestURL) + call.path, body: Array(call.body.utf8), headers: headers)
            let name = "\(call.method.rawValue) \(call.template) [\(call.path)] → \(response.status)"
            covered.insert("\(call.method.rawValue.lowercased()) \(call.template)")
            statuses[call.template, default: []].insert(response.status)
            if response.header("X-Request-Id") == nil { problems.append("\(name): no X-Request-Id") }
            problems += Self.conforms(response, to: document, method: call.method.rawValue.lowercased(), template: call.template).map {
                "\(name): \($0)"
            }
        }
        for call in calls { try await check(call) }
        // An invalid file: the reload is refused (422), documented too.
        let file = server.directory + "/sources.yaml"
        let good = try String(contentsOfFile: file, encoding: .utf8)
        try (good + "\nnot-a-section: 1\n").write(toFile: file, atomically: true, encoding: .utf8)
        try await check(Call(method: .POST, template: "/admin/reload", path: "/admin/reload"))
        try good.write(toFile: file, atomically: true, encoding: .utf8)

        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        // The calls reach the answers they were written for.
        #expect(statuses["/admin/destinations/{name}/resume"] == [200, 409])
        #expect(statuses["/admin/replay"] == [200, 202, 400, 403])
        #expect(statuses["/admin/reload"] == [200, 403, 415, 422])
        #expect(statuses["/admin/config"] == [200, 421])
        #expect(statuses["/webhooks/{source}"] == [200, 202, 400, 401, 404, 413, 429])
        let documented = Self.operations(document)
        #expect(documented.subtracting(covered).isEmpty, "documented but never called: \(documented.subtracting(covered).sorted())")
        #expect(covered.subtracting(documented).isEmpty, "called but not documented: \(covered.subtracting(documented).sorted())")
        try await server.stop()
        try await sink.stop()
    }

    @Test("the schema check itself rejects a wrong type, a missing member, an unknown enum value and an undocumented status")
    func validatorCanFail() throws {
        let document = try Self.load()
        func response(_ status: Int, _ body: String) -> TestResponse {
            TestResponse(status: status, headers: [("Content-Type", "application/json")], body: Array(body.utf8))
        }
        #expect(Self.conforms(response(200, #"{"status":"ok"}"#), to: document, method: "get", template: "/healthz").isEmpty)
        #expect(!Self.conforms(response(200, #"{"status":1}"#), to: document, method: "get", template: "/healthz").isEmpty)
        #expect(!Self.conforms(response(200, "{}"), to: document, method: "get", template: "/healthz").isEmpty)
        #expect(!Self.conforms(response(201, #"{"status":"ok"}"#), to: document, method: "get", template: "/healthz").isEmpty)
        #expect(
            !Self.conforms(response(202, #"{"id":"x","status":"maybe"}"#), to: document, method: "post", template: "/webhooks/{source}")
                .isEmpty)
    }

    // MARK: The document

    static func load() throws -> JSONValue {
        let text = try String(contentsOfFile: documentPath, encoding: .utf8)
        return json(try Yams.load(yaml: text) as Any)
    }

    static func json(_ value: Any) -> JSONValue {
        switch value {
        case let dictionary as [String: Any]:
            return .object(JSONObject(dictionary.sorted { $0.key < $1.key }.map { ($0.key, json($0.value)) }))
        case let dictionary as [AnyHashable: Any]:
            return .object(JSONObject(dictionary.map { ("\($0.key)", json($0.value)) }.sorted { $0.0 < $1.0 }))
        case let array as [Any]: return .array(array.map(json))
        case let flag as Bool: return .bool(flag)
        case let number as Int: return .int(number)
        case let number as Double: return .double(number)
        case let text as String: return .string(text)
        default: return .null
        }
    }

    /// `method path` of every documented operation.
    static func operations(_ document: JSONValue) -> Set<String> {
        var result = Set<String>()
        for (path, item) in document["paths"]?.objectValue?.members ?? [] {
            for (method, _) in item.objectValue?.members ?? [] where ["get", "post", "put", "delete", "patch"].contains(method) {
                result.insert("\(method) \(path)")
            }
        }
        return result
    }

    /// Problems with `response` against the documented operation (empty when it conforms).
    static func conforms(_ response: TestResponse, to document: JSONValue, method: String, template: String) -> [String] {
        guard let operation = document["paths"]?[template]?[method] else { return ["the operation is not documented"] }
        guard var documented = operation["responses"]?[String(response.status)] else {
            return ["status \(response.status) is not documented (body: \(String(decoding: response.body.prefix(200), as: UTF8.self)))"]
        }
        if let reference = documented["$ref"]?.stringValue { documented = resolve(reference, in: document) ?? .null }
        guard let schema = documented["content"]?["application/json"]?["schema"] else { return [] }
        guard response.header("Content-Type")?.hasPrefix("application/json") == true else { return ["the answer is not JSON"] }
        guard let body = response.json else { return ["the body does not parse as JSON"] }
        return validate(body, schema, document: document, at: "$")
    }

    static func resolve(_ reference: String, in document: JSONValue) -> JSONValue? {
        guard reference.hasPrefix("#/") else { return nil }
        var node: JSONValue? = document
        for part in reference.dropFirst(2).split(separator: "/") { node = node?[String(part)] }
        return node
    }

    /// The subset of JSON Schema the document uses: $ref, type (one or several), enum, required, properties,
    /// additionalProperties, items and format date-time.
    static func validate(_ value: JSONValue, _ schema: JSONValue, document: JSONValue, at path: String) -> [String] {
        if let reference = schema["$ref"]?.stringValue {
            guard let resolved = resolve(reference, in: document) else { return ["\(path): unresolvable \(reference)"] }
            return validate(value, resolved, document: document, at: path)
        }
        var problems: [String] = []
        let types = schema["type"].map { $0.arrayValue?.compactMap(\.stringValue) ?? [$0.stringValue ?? ""] } ?? []
        if !types.isEmpty, !types.contains(where: { matches(value, type: $0) }) {
            return ["\(path): \(value.serialized()) is not of type \(types.joined(separator: " or "))"]
        }
        if let options = schema["enum"]?.arrayValue, !options.contains(value) {
            problems.append("\(path): \(value.serialized()) is not one of \(options.map { $0.serialized() }.joined(separator: ", "))")
        }
        if schema["format"] == "date-time", let text = value.stringValue, Clock.parse(rfc3339: text) == nil {
            problems.append("\(path): '\(text)' is not an RFC 3339 time")
        }
        if let object = value.objectValue {
            for required in schema["required"]?.arrayValue?.compactMap(\.stringValue) ?? [] where object[required] == nil {
                problems.append("\(path): member '\(required)' is missing")
            }
            let properties = schema["properties"]?.objectValue
            for (key, member) in object.members {
                if let property = properties?[key] {
                    problems += validate(member, property, document: document, at: "\(path).\(key)")
                } else if let additional = schema["additionalProperties"] {
                    if additional == .bool(false) {
                        problems.append("\(path): member '\(key)' is not documented")
                    } else if additional.objectValue != nil {
                        problems += validate(member, additional, document: document, at: "\(path).\(key)")
                    }
                }
            }
        }
        if let elements = value.arrayValue, let items = schema["items"] {
            for (index, element) in elements.enumerated() {
                problems += validate(element, items, document: document, at: "\(path)[\(index)]")
            }
        }
        return problems
    }

    static func matches(_ value: JSONValue, type: String) -> Bool {
        switch (type, value) {
        case ("null", .null), ("boolean", .bool), ("string", .string), ("array", .array), ("object", .object): return true
        case ("number", .number): return true
        case ("integer", .number(let text)): return Int(text) != nil
        default: return false
        }
    }
}
