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

    /// The longest `tolerance`: a signed request captured on the way can be sent again for that long.
    static let maximumTolerance: Duration = .seconds(3600)

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

extension VerifyConfig.Preset {
    /// The id the sender documents as unique per event and kept on its retries: the idempotency key of a source that
    /// sets none, so that a captured request sent again (within `tolerance`, or ever, for presets without a timestamp)
    /// is a duplicate, not a second event. nil for `hmac`, whose sender is unknown. (standard-webhooks also reads
    /// `svix-id` when `webhook-id` is absent, as its verifier reads `svix-*`.)
    var defaultIdempotencyKey: ValueSelector? {
        switch self {
        case .github: .header("x-github-delivery")
        case .stripe: .jsonPath([.member("id")])
        case .slack: .jsonPath([.member("event_id")])
        case .standardWebhooks: .header("webhook-id")
        case .shopify: .header("x-shopify-webhook-id")
        case .gitlab: .header("idempotency-key")
        case .hmac: nil
        }
    }
}
