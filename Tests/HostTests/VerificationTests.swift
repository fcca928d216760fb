import Crypto
import Foundation
import PluginKit
import Testing

@testable import Host

/// Inbound signature presets, checked against requests signed as each provider signs them.
@Suite("Signature verification")
struct VerificationTests {
    /// A request as a provider would send it.
    struct Signed {
        var headers: [String: String]
        var body: [UInt8]
    }

    static let slackBody =
        "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"

    /// Each preset with a request that must verify, the moment it was signed, and the header holding a timestamp.
    static let cases:
        [(name: String, config: VerifyConfig, request: Signed, signedAt: Date, timestampHeader: String?, signatureHeader: String)] = [
            (
                "github (GitHub's documented example)",
                VerifyConfig(preset: .github, secrets: [Array("It's a Secret to Everybody".utf8)]),
                Signed(
                    headers: ["x-hub-signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"],
                    body: Array("Hello, World!".utf8)),
                Date(), nil, "x-hub-signature-256"
            ),
            (
                "slack (Slack's documented example)",
                VerifyConfig(preset: .slack, secrets: [Array("8f742231b10e8888abcd99yyyzzz85a5".utf8)]),
                Signed(
                    headers: [
                        "x-slack-request-timestamp": "1531420618",
                        "x-slack-signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
                    ], body: Array(slackBody.utf8)),
                Date(timeIntervalSince1970: 1_531_420_618), "x-slack-request-timestamp", "x-slack-signature"
            ),
            (
                "standard-webhooks (the specification's test vector)",
                VerifyConfig(preset: .standardWebhooks, secrets: [Array(Data(base64Encoded: "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")!)]),
                Signed(
                    headers: [
                        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
                        "webhook-signature": "v1,bm9wZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                    ], body: Array(#"{"test": 2432232314}"#.utf8)),
                Date(timeIntervalSince1970: 1_614_265_330), "webhook-timestamp", "webhook-signature"
            ),
            (
                "stripe",
                VerifyConfig(preset: .stripe, secrets: [Array("whsec_test_secret".utf8)]),
                Signed(
                    headers: [
                        "stripe-signature": "t=1700000000,v1=248a374f50f943a28b0f6ab50faf9a7e7e29b710fa26df9fb1618b9bf8ea9c9a,v0=ignored"
                    ],
                    body: Array(#"{"id":"evt_1"}"#.utf8)),
                Date(timeIntervalSince1970: 1_700_000_000), "stripe-signature", "stripe-signature"
            ),
            (
                "shopify",
                VerifyConfig(preset: .shopify, secrets: [Array("shpss_secret".utf8)]),
                Signed(headers: ["x-shopify-hmac-sha256": "xocA3LkeJ/RvNrkxep1EUtFHuj7rIoIqZYaLU26LyPQ="], body: Array(#"{"id":1}"#.utf8)),
                Date(), nil, "x-shopify-hmac-sha256"
            ),
            (
                "gitlab",
                VerifyConfig(preset: .gitlab, secrets: [Array("gl-token".utf8)]),
                Signed(headers: ["x-gitlab-token": "gl-token"], body: Array(#"{"object_kind":"push"}"#.utf8)),
                Date(), nil, "x-gitlab-token"
            ),
            (
                "hmac sha512 base64 over timestamp:body",
                VerifyConfig(
                    preset: .hmac, secrets: [Array("k".utf8)], header: "x-sig", algorithm: .sha512, encoding: .base64, prefix: "",
                    timestampHeader: "x-ts", signedLayout: "{timestamp}:{body}"),
                Signed(
                    headers: [
                        "x-ts": "1700000000",
                        "x-sig": "nscudqpGj+nagJPa1DKGA7Sqy942p3qry+9cROt90CzxuSat5/SoEHwRyHeqk21vBQF0Z2u7Ccggwshle5uyEA==",
                    ], body: Array(#"{"a":1}"#.utf8)),
                Date(timeIntervalSince1970: 1_700_000_000), "x-ts", "x-sig"
            ),
            (
                "hmac sha1 hex with a prefix",
                VerifyConfig(preset: .hmac, secrets: [Array("k".utf8)], header: "x-sig", algorithm: .sha1, encoding: .hex, prefix: "sha1="),
                Signed(headers: ["x-sig": "sha1=7b4ab6898ab862077e9caf504b39982f2bc41453"], body: Array(#"{"a":1}"#.utf8)),
                Date(), nil, "x-sig"
            ),
        ]

    @Test("each preset accepts a request signed as the provider signs it", arguments: 0..<cases.count)
    func accepts(_ index: Int) {
        let test = Self.cases[index]
        #expect(
            SignatureVerifier(config: test.config).verify(headers: test.request.headers, body: test.request.body, now: test.signedAt)
                == nil, "\(test.name)")
    }

    @Test("each preset rejects a tampered body, a wrong secret and a missing header", arguments: 0..<cases.count)
    func rejects(_ index: Int) {
        let test = Self.cases[index]
        let verifier = SignatureVerifier(config: test.config)
        let tampered = test.request.body + Array(" ".utf8)
        if test.config.preset != .gitlab {
            #expect(
                verifier.verify(headers: test.request.headers, body: tampered, now: test.signedAt) != nil, "\(test.name): tampered body")
        }
        var wrong = test.config
        wrong.secrets = [Array("not the secret".utf8)]
        #expect(
            SignatureVerifier(config: wrong).verify(headers: test.request.headers, body: test.request.body, now: test.signedAt) != nil,
            "\(test.name): wrong secret")
        var missing = test.request.headers
        missing[test.signatureHeader] = nil
        #expect(verifier.verify(headers: missing, body: test.request.body, now: test.signedAt) != nil, "\(test.name): missing header")
    }

    @Test("presets with a timestamp reject one outside the tolerance, either way", arguments: 0..<cases.count)
    func staleTimestamps(_ index: Int) {
        let test = Self.cases[index]
        guard test.timestampHeader != nil else { return }
        let verifier = SignatureVerifier(config: test.config)
        #expect(verifier.verify(headers: test.request.headers, body: test.request.body, now: test.signedAt.addingTimeInterval(299)) == nil)
        #expect(verifier.verify(headers: test.request.headers, body: test.request.body, now: test.signedAt.addingTimeInterval(301)) != nil)
        #expect(verifier.verify(headers: test.request.headers, body: test.request.body, now: test.signedAt.addingTimeInterval(-301)) != nil)
    }

    @Test("an hmac layout signs its text with every {timestamp} and {body} replaced, as Foundation's replace and split did")
    func signedLayout() {
        let body = Array(#"{"a":"{body} {timestamp}"}"#.utf8)
        let layouts = [
            "{body}", "{timestamp}.{body}", "v0:{timestamp}:{body}", "{body}{body}", "{time{body}stamp}", "{timestamp",
            "", "no tokens", "{timestamp}{timestamp}.{body}.", "é{body}ü",
        ]
        for layout in layouts {
            let parts = layout.replacingOccurrences(of: "{timestamp}", with: "1700000000").components(separatedBy: "{body}")
            var expected = Array(parts[0].utf8)
            for part in parts.dropFirst() { expected += body + Array(part.utf8) }
            #expect(SignatureVerifier.signedBytes(layout: layout, timestamp: "1700000000", body: body) == expected, "\(layout)")
        }
    }

    @Test("during a rotation any configured secret verifies")
    func rotation() {
        var config = Self.cases[0].config
        config.secrets = [Array("the new secret".utf8), Array("It's a Secret to Everybody".utf8)]
        let request = Self.cases[0].request
        #expect(SignatureVerifier(config: config).verify(headers: request.headers, body: request.body) == nil)
    }

    @Test("the server answers 401 without saying why, stores nothing, and accepts the correctly signed request")
    func endToEnd() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let yaml =
            testServerSection() + """
                destinations:
                  out: { formatter: generic, url: "\(sink.url)/out" }
                sources:
                  github:
                    verify: { preset: github, secret: ["rotated-out", "${GITHUB_SECRET}"] }
                    destinations: [out]
                """
        let server = try await TestServer.start(yaml: yaml, environment: ["GITHUB_SECRET": "It's a Secret to Everybody"])
        let body = Array("Hello, World!".utf8)
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        for (headers, label) in [([("X-Hub-Signature-256", "sha256=" + String(repeating: "0", count: 64))], "wrong"), ([], "missing")] {
            let refused = try await send(.POST, "\(server.ingestURL)/webhooks/github", body: body, headers: headers)
            #expect(refused.status == 401, "\(label) signature")
            #expect(refused.json == ["error": "unauthorized", "detail": "the request's signature could not be verified"])
        }
        let tampered = try await send(
            .POST, "\(server.ingestURL)/webhooks/github", body: body + [0x21], headers: [("X-Hub-Signature-256", good)])
        #expect(tampered.status == 401)
        #expect(try await server.store.queueDepths().isEmpty, "a refused request was stored")
        let accepted = try await send(.POST, "\(server.ingestURL)/webhooks/github", body: body, headers: [("X-Hub-Signature-256", good)])
        #expect(accepted.status == 202)
        try await waitUntil("the verified event") { sink.requests("/out").count == 1 }
        #expect(sink.requests("/out").first?.body == body)
        // Failures are counted, and nothing about the source shows its secret.
        let sources = try await send(.GET, "\(server.adminURL)/admin/sources")
        let github = try #require(sources.json?["sources"]?.arrayValue?.first { $0["name"] == "github" })
        #expect(github["requests"] == ["accepted": 1, "signature_failed": 3])
        #expect(github["verify"] == "github")
        #expect(!String(decoding: sources.body, as: UTF8.self).contains("Secret to Everybody"))
        try await server.stop()
        try await sink.stop()
    }

    @Test("each preset whose sender gives a unique id deduplicates by it: a captured request sent again is a duplicate")
    func replaysRefused() async throws {
        let sink = RecordingSink()
        try await sink.start()
        let secret = "replay-secret"
        let whsec = "whsec_" + Data("replay-secret-key".utf8).base64EncodedString()
        let yaml =
            testServerSection() + """
                destinations:
                  out: { formatter: generic, url: "\(sink.url)/out" }
                sources:
                  github: { verify: { preset: github, secret: \(secret) }, destinations: [out] }
                  stripe: { verify: { preset: stripe, secret: \(secret) }, destinations: [out] }
                  slack: { verify: { preset: slack, secret: \(secret) }, destinations: [out] }
                  sw: { verify: { preset: standard-webhooks, secret: "\(whsec)" }, destinations: [out] }
                  shopify: { verify: { preset: shopify, secret: \(secret) }, destinations: [out] }
                  gitlab: { verify: { preset: gitlab, secret: \(secret) }, destinations: [out] }
                  unkeyed: { verify: { preset: github, secret: \(secret) }, idempotency_key: none, destinations: [out] }
                """
        let server = try await TestServer.start(yaml: yaml)
        func mac(_ key: [UInt8], _ message: String) -> [UInt8] {
            Array(HMAC<SHA256>.authenticationCode(for: Array(message.utf8), using: SymmetricKey(data: key)))
        }
        func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
        let now = String(Int(Date().timeIntervalSince1970))
        /// The request each sender would send for its event `id`.
        func request(_ source: String, id: String) -> (body: String, headers: [(String, String)]) {
            let key = Array(secret.utf8)
            switch source {
            case "github", "unkeyed":
                let body = #"{"zen":"\#(id)"}"#
                return (body, [("X-GitHub-Delivery", id), ("X-Hub-Signature-256", "sha256=" + hex(mac(key, body)))])
            case "stripe":
                let body = #"{"id":"\#(id)","type":"charge.succeeded"}"#
                return (body, [("Stripe-Signature", "t=\(now),v1=" + hex(mac(key, "\(now).\(body)")))])
            case "slack":
                let body = #"{"type":"event_callback","event_id":"\#(id)"}"#
                return (body, [("X-Slack-Request-Timestamp", now), ("X-Slack-Signature", "v0=" + hex(mac(key, "v0:\(now):\(body)")))])
            case "sw":
                let body = #"{"n":"\#(id)"}"#
                let signature = Data(mac(Array("replay-secret-key".utf8), "\(id).\(now).\(body)")).base64EncodedString()
                return (body, [("webhook-id", id), ("webhook-timestamp", now), ("webhook-signature", "v1,\(signature)")])
            case "shopify":
                let body = #"{"order":"\#(id)"}"#
                return (body, [("X-Shopify-Webhook-Id", id), ("X-Shopify-Hmac-Sha256", Data(mac(key, body)).base64EncodedString())])
            default:
                return (#"{"object_kind":"push","n":"\#(id)"}"#, [("Idempotency-Key", id), ("X-Gitlab-Token", secret)])
            }
        }
        for source in ["github", "stripe", "slack", "sw", "shopify", "gitlab"] {
            let first = request(source, id: "evt-1-\(source)")
            let accepted = try await server.post(source, json: first.body, headers: first.headers)
            #expect(accepted.status == 202, "\(source): \(String(decoding: accepted.body, as: UTF8.self))")
            let again = try await server.post(source, json: first.body, headers: first.headers)
            #expect(again.status == 200, "\(source): the same request sent again")
            #expect(again.json?["status"] == "duplicate")
            #expect(again.json?["id"] == accepted.json?["id"])
            let second = request(source, id: "evt-2-\(source)")
            #expect(try await server.post(source, json: second.body, headers: second.headers).status == 202, "\(source): another event")
        }
        // Standard Webhooks' other spelling (svix-*) is deduplicated by svix-id.
        let svix = request("sw", id: "evt-3-svix")
        let svixHeaders = svix.headers.map { ($0.0.replacingOccurrences(of: "webhook-", with: "svix-"), $0.1) }
        #expect(try await server.post("sw", json: svix.body, headers: svixHeaders).status == 202)
        #expect(try await server.post("sw", json: svix.body, headers: svixHeaders).json?["status"] == "duplicate")
        // idempotency_key: none turns it off.
        let unkeyed = request("unkeyed", id: "evt-1")
        for _ in 0..<2 { #expect(try await server.post("unkeyed", json: unkeyed.body, headers: unkeyed.headers).status == 202) }
        let config = try await send(.GET, "\(server.adminURL)/admin/config").json?["sources"]
        #expect(config?["github"]?["idempotency_key"] == "header:x-github-delivery")
        #expect(config?["stripe"]?["idempotency_key"] == "$.id")
        #expect(config?["unkeyed"]?["idempotency_key"] == .null)
        try await waitUntil("15 deliveries") { sink.requests("/out").count == 15 }
        try await server.stop()
        try await sink.stop()
    }

    @Test("verify mistakes are configuration errors at their line, and never echo a secret")
    func configErrors() {
        func problems(_ verify: String) -> [String] {
            let yaml = """
                destinations:
                  out: { formatter: generic, url: "https://x.example/in" }
                sources:
                  app:
                    verify: \(verify)
                    destinations: [out]
                """
            do {
                _ = try ConfigLoader(environment: [:]).load(yaml: yaml, file: "/s.yaml")
                return []
            } catch {
                return error.problems.map(\.description)
            }
        }
        #expect(
            problems("{ preset: githbu, secret: s }") == [
                "/s.yaml:5: sources.app.verify.preset: unknown preset 'githbu' (did you mean 'github'?); one of github, stripe, slack, standard-webhooks, shopify, gitlab, hmac"
            ])
        #expect(
            problems("{ preset: github }") == ["/s.yaml:5: sources.app.verify: needs 'secret' (or a list of secrets during a rotation)"])
        #expect(
            problems("{ preset: github, secret: s, header: X-Sig }") == [
                "/s.yaml:5: sources.app.verify.header: is only used with preset 'hmac'"
            ])
        #expect(
            problems("{ preset: hmac, secret: s }") == [
                "/s.yaml:5: sources.app.verify: preset 'hmac' needs 'header': the header carrying the signature"
            ])
        #expect(
            problems("{ preset: hmac, secret: s, header: X-Sig, timestamp_header: X-Ts }") == [
                "/s.yaml:5: sources.app.verify: 'timestamp_header' is checked against 'tolerance' but is not part of what is signed "
                    + "('signed' has no {timestamp}), so anyone can change it; add {timestamp} to 'signed', such as \"{timestamp}.{body}\", "
                    + "or remove timestamp_header"
            ])
        #expect(problems("{ preset: hmac, secret: s, header: X-Sig, timestamp_header: X-Ts, signed: \"{timestamp}.{body}\" }").isEmpty)
        #expect(
            problems("{ preset: stripe, secret: s, tolerance: 2h }") == [
                "/s.yaml:5: sources.app.verify.tolerance: must be from 1s to 1h (a signed request captured on the way can be sent again for as long as this)"
            ])
        #expect(problems("{ preset: stripe, secret: s, tolerance: 1h }").isEmpty)
        let badSecret = problems("{ preset: standard-webhooks, secret: \"topsecret\" }")
        #expect(badSecret == ["/s.yaml:5: sources.app.verify.secret: must be 'whsec_' followed by base64 (a Standard Webhooks secret)"])
        #expect(!badSecret.joined().contains("topsecret"))
    }
}
