import Foundation
import NIOCore

/// An IP network (`10.0.0.0/8`, `fd00::/8`, or one address), for `server.trusted_proxies`.
struct IPNetwork: Sendable, Equatable, CustomStringConvertible {
    /// 4 or 16 bytes; an IPv4-mapped IPv6 address is stored as IPv4.
    let bytes: [UInt8]
    let prefix: Int

    /// Parses `address` or `address/prefix`; nil when malformed.
    init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPNetwork.bytes(of: String(parts[0])) else { return nil }
        let width = address.count * 8
        var prefix = width
        if parts.count == 2 {
            guard parts[1].count <= 3, parts[1].allSatisfy({ $0.isASCII && $0.isNumber }), let given = Int(parts[1]), given <= width
            else { return nil }
            prefix = given
        }
        self.bytes = address
        self.prefix = prefix
    }

    var description: String {
        let text =
            bytes.count == 4
            ? bytes.map(String.init).joined(separator: ".")
            : stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }.joined(
                separator: ":")
        return prefix == bytes.count * 8 ? text : "\(text)/\(prefix)"
    }

    func contains(_ address: [UInt8]) -> Bool {
        guard address.count == bytes.count else { return false }
        var remaining = prefix
        for index in bytes.indices where remaining > 0 {
            let bits = min(8, remaining)
            let mask: UInt8 = bits == 8 ? 0xFF : ~(0xFF >> UInt8(bits))
            if address[index] & mask != bytes[index] & mask { return false }
            remaining -= bits
        }
        return true
    }

    /// The bytes of an IPv4 or IPv6 address written as text (brackets allowed); IPv4-mapped IPv6 becomes IPv4.
    static func bytes(of text: String) -> [UInt8]? {
        let bare = text.trimmingCharacters(in: CharacterSet(charactersIn: "[] "))
        var ipv4 = in_addr()
        if inet_pton(AF_INET, bare, &ipv4) == 1 { return withUnsafeBytes(of: &ipv4) { Array($0) } }
        var ipv6 = in6_addr()
        if inet_pton(AF_INET6, bare, &ipv6) == 1 { return unmapped(withUnsafeBytes(of: &ipv6) { Array($0) }) }
        return nil
    }

    /// `::ffff:a.b.c.d` as the IPv4 address it is.
    static func unmapped(_ bytes: [UInt8]) -> [UInt8] {
        guard bytes.count == 16, bytes.prefix(10).allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF else { return bytes }
        return Array(bytes[12...])
    }
}

/// Who a request comes from, for the limits that are counted per client (`rate_limit_unverified`,
/// `max_concurrent_per_client`).
///
/// The peer's address, unless the peer is one of `server.trusted_proxies`: then the right-most `X-Forwarded-For` entry
/// that is not a trusted proxy (the address the nearest trusted proxy saw). An IPv6 client is counted by its /64,
/// which one host usually owns whole.
enum ClientAddress {
    /// The key the per-client limits count under.
    static func key(peer: SocketAddress?, forwardedFor: [String], trusted: [IPNetwork]) -> String {
        guard let peerBytes = peer.flatMap(bytes(of:)) else { return "local" }
        var client = peerBytes
        if !trusted.isEmpty, trusted.contains(where: { $0.contains(peerBytes) }) {
            let hops = forwardedFor.flatMap { $0.split(separator: ",") }.reversed()
            for hop in hops {
                guard let address = IPNetwork.bytes(of: String(hop)) else { break }
                client = address
                if !trusted.contains(where: { $0.contains(address) }) { break }
            }
        }
        return render(client)
    }

    static func bytes(of address: SocketAddress) -> [UInt8]? {
        switch address {
        case .v4(let v4):
            var raw = v4.address.sin_addr
            return withUnsafeBytes(of: &raw) { Array($0) }
        case .v6(let v6):
            var raw = v6.address.sin6_addr
            return IPNetwork.unmapped(withUnsafeBytes(of: &raw) { Array($0) })
        case .unixDomainSocket:
            return nil
        }
    }

    /// IPv4 as dotted decimal; IPv6 as its /64.
    static func render(_ bytes: [UInt8]) -> String {
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        let groups = stride(from: 0, to: 8, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
        return groups.joined(separator: ":") + "::/64"
    }
}
