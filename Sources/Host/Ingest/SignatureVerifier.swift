import Crypto
import Foundation

/// Checks a request's signature on the raw body bytes, before anything is parsed or stored, for one of the presets of
/// ``VerifyConfig``. Every comparison is constant-time; any of several secrets may match (rotation).
///
/// `verify` returns `nil` when the request is authentic, else the reason, for the log only: the client is told just
/// that verification failed, never which part.
struct SignatureVerifier: Sendable {
    let config: VerifyConfig

    /// Headers as received, names in lowercase.
    func verify(headers: [String: String], body: [UInt8], now: Date = Date()) -> String? {
        switch config.preset {
        case .github:
            guard let header = headers["x-hub-signature-256"] else { return "missing X-Hub-Signature-256" }
            return matchAny(provided: [header], prefix: "sha256=", encoding: .hex) { hmac(.sha256, $0, body) }
        case .shopify:
            guard let header = headers["x-shopify-hmac-sha256"] else { return "missing X-Shopify-Hmac-Sha256" }
            return matchAny(provided: [header], prefix: "", encoding: .base64) { hmac(.sha256, $0, body) }
        case .gitlab:
            guard let token = headers["x-gitlab-token"] else { return "missing X-Gitlab-Token" }
            return config.secrets.contains { ConstantTime.equal($0, token.utf8) } ? nil : "X-Gitlab-Token does not match"
        case .slack:
            guard let timestamp = headers["x-slack-request-timestamp"], let signature = headers["x-slack-signature"] else {
                return "missing X-Slack-Request-Timestamp or X-Slack-Signature"
            }
            if let stale = checkTimestamp(timestamp, now: now) { return stale }
            let signed = Array("v0:\(timestamp):".utf8) + body
            return matchAny(provided: [signature], prefix: "v0=", encoding: .hex) { hmac(.sha256, $0, signed) }
        case .stripe:
            guard let header = headers["stripe-signature"] else { return "missing Stripe-Signature" }
            var timestamp: String?
            var signatures: [String] = []
            for part in header.split(separator: ",") {
                let pair = part.split(separator: "=", maxSplits: 1).map { String($0.trimmingBlanks()) }
                guard pair.count == 2 else { continue }
                if pair[0] == "t" { timestamp = pair[1] }
                if pair[0] == "v1" { signatures.append(pair[1]) }
            }
            guard let timestamp, !signatures.isEmpty else { return "Stripe-Signature has no t= or no v1=" }
            if let stale = checkTimestamp(timestamp, now: now) { return stale }
            let signed = Array("\(timestamp).".utf8) + body
            return matchAny(provided: signatures, prefix: "", encoding: .hex) { hmac(.sha256, $0, signed) }
        case .standardWebhooks:
            guard let id = headers["webhook-id"] ?? headers["svix-id"],
                let timestamp = headers["webhook-timestamp"] ?? headers["svix-timestamp"],
                let header = headers["webhook-signature"] ?? headers["svix-signature"]
            else { return "missing webhook-id, webhook-timestamp or webhook-signature" }
            if let stale = checkTimestamp(timestamp, now: now) { return stale }
            let signatures = header.split(separator: " ").compactMap { entry -> String? in
                entry.hasPrefix("v1,") ? String(entry.dropFirst(3)) : nil
            }
            let signed = Array("\(id).\(timestamp).".utf8) + body
            return matchAny(provided: signatures, prefix: "", encoding: .base64) { hmac(.sha256, $0, signed) }
        case .hmac:
            guard let signature = headers[config.header] else { return "missing \(config.header)" }
            var timestamp = ""
            if let timestampHeader = config.timestampHeader {
                guard let value = headers[timestampHeader] else { return "missing \(timestampHeader)" }
                if let stale = checkTimestamp(value, now: now) { return stale }
                timestamp = value
            }
            let signed = Self.signedBytes(layout: config.signedLayout, timestamp: timestamp, body: body)
            return matchAny(provided: [signature], prefix: config.prefix, encoding: config.encoding) {
                hmac(config.algorithm, $0, signed)
            }
        }
    }

    /// What an `hmac` preset signs: `layout` with each `{timestamp}` replaced by the timestamp (digits only, checked
    /// before) and each `{body}` by the body, byte by byte (Foundation's replace and split bridge through NSString on
    /// every request).
    static func signedBytes(layout: String, timestamp: String, body: [UInt8]) -> [UInt8] {
        let layout = Array(layout.utf8)
        let timestampToken = Array("{timestamp}".utf8)
        let bodyToken = Array("{body}".utf8)
        var signed: [UInt8] = []
        signed.reserveCapacity(layout.count + body.count + timestamp.utf8.count)
        var index = 0
        while index < layout.count {
            if layout[index...].starts(with: timestampToken) {
                signed += timestamp.utf8
                index += timestampToken.count
            } else if layout[index...].starts(with: bodyToken) {
                signed += body
                index += bodyToken.count
            } else {
                signed.append(layout[index])
                index += 1
            }
        }
        return signed
    }

    /// Whether any provided signature equals the MAC under any secret.
    private func matchAny(
        provided: [String], prefix: String, encoding: VerifyConfig.Encoding, mac: ([UInt8]) -> [UInt8]
    ) -> String? {
        let decoded = provided.compactMap { value -> [UInt8]? in
            let trimmed = value.trimmingBlanks()
            guard trimmed.hasPrefix(prefix) else { return nil }
            let text = String(trimmed.dropFirst(prefix.count))
            switch encoding {
            case .hex: return Self.hexDecode(text)
            case .base64: return Data(base64Encoded: text).map { Array($0) }
            }
        }
        guard !decoded.isEmpty else { return "the signature header is malformed" }
        for secret in config.secrets {
            let expected = mac(secret)
            // Every candidate is compared, so the time does not reveal which one matched.
            var matched = false
            for candidate in decoded where ConstantTime.equal(candidate, expected) { matched = true }
            if matched { return nil }
        }
        return "no signature matches"
    }

    /// Checks a sender's Unix timestamp (seconds; milliseconds are recognised by their size) against `tolerance`.
    /// The text is the sender's and unsigned until the MAC is checked: only a plain decimal of a plausible size is a
    /// timestamp (no NaN, infinity, sign, exponent or 20-digit number reaches a conversion), and the skew is computed
    /// in integers.
    private func checkTimestamp(_ text: String, now: Date) -> String? {
        guard let seconds = Self.unixSeconds(text) else { return "the timestamp is not a Unix time in seconds" }
        let current = Int64(finite: now.timeIntervalSince1970) ?? 0
        let skew = seconds > current ? seconds - current : current - seconds
        return Double(skew) <= config.tolerance.seconds ? nil : "the timestamp is \(skew) s from now, beyond the tolerance"
    }

    /// `1700000000` or `1700000000123` (milliseconds) or `1700000000.5` as whole seconds; nil for anything else.
    static func unixSeconds(_ text: String) -> Int64? {
        let trimmed = text.trimmingBlanks()
        let parts = trimmed.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let digits = parts[0]
        // 1 to 13 digits: up to the year 2286 in seconds or 2001–2286 in milliseconds, so the value fits any integer.
        guard (1...13).contains(digits.utf8.count), digits.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
        if parts.count == 2 {
            guard (1...9).contains(parts[1].utf8.count), parts[1].utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
        }
        guard let value = Int64(digits) else { return nil }
        return value > 100_000_000_000 ? value / 1000 : value
    }

    private func hmac(_ algorithm: VerifyConfig.Algorithm, _ key: [UInt8], _ message: [UInt8]) -> [UInt8] {
        let symmetricKey = SymmetricKey(data: key)
        switch algorithm {
        case .sha1: return Array(HMAC<Insecure.SHA1>.authenticationCode(for: message, using: symmetricKey))
        case .sha256: return Array(HMAC<SHA256>.authenticationCode(for: message, using: symmetricKey))
        case .sha512: return Array(HMAC<SHA512>.authenticationCode(for: message, using: symmetricKey))
        }
    }

    static func hexDecode(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = hexValue(digits[index]), let low = hexValue(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func hexValue(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
