/// A source's `verify` section: how a request proves it comes from the sender holding the secret.
struct VerifyConfig: Sendable {
    enum Preset: String, Sendable, CaseIterable {
        case github
        case stripe
        case slack
        case standardWebhooks = "standard-webhooks"
        case shopify
        case gitlab
        case hmac
    }

    enum Algorithm: String, Sendable, CaseIterable {
        case sha1, sha256, sha512
    }

    enum Encoding: String, Sendable, CaseIterable {
        case hex, base64
    }

    var preset: Preset
    /// Each secret's key bytes; several during a rotation (any one may match).
    var secrets: [[UInt8]]
    /// For presets with a timestamp: how far it may be from now, either way.
    var tolerance: Duration = .seconds(300)

    // MARK: preset hmac

    /// The header carrying the signature (lowercase).
    var header = ""
    var algorithm = Algorithm.sha256
    var encoding = Encoding.hex
    /// Text before the signature in the header (`sha256=`).
    var prefix = ""
    /// The header carrying a Unix timestamp that is part of the signed string (lowercase).
    var timestampHeader: String?
    /// What is signed: `{body}`, with `{timestamp}` where the timestamp goes (`{timestamp}.{body}`).
    var signedLayout = "{body}"
}
