import Crypto
import Foundation

/// Outbound signatures per the Standard Webhooks specification: HMAC-SHA256 over `id.timestamp.body` with each secret,
/// base64, prefixed `v1,`, space-separated when there are several secrets (a rotation), so receivers can verify with
/// any Standard Webhooks (or Svix) library.
enum WebhookSigner {
    /// The `webhook-signature` header value.
    static func signature(secrets: [[UInt8]], id: String, timestamp: Int64, body: [UInt8]) -> String {
        var signed = Array("\(id).\(timestamp).".utf8)
        signed.append(contentsOf: body)
        return secrets.map { secret in
            let code = HMAC<SHA256>.authenticationCode(for: signed, using: SymmetricKey(data: secret))
            return "v1," + Data(code).base64EncodedString()
        }.joined(separator: " ")
    }
}
