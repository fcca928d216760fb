import HostShims
import Synchronization

/// Random 64-bit words from the system's cryptographically secure generator, read from the kernel 4 KiB at a time:
/// an ingested request makes three ids (request, event, delivery) and an attempt draws its retry jitter, and
/// `SystemRandomNumberGenerator` makes a `getrandom` call for every 8 bytes.
struct RandomWords: ~Copyable {
    private static let shared = Mutex(RandomWords())

    /// Two words no other call gets.
    static func pair() -> (UInt64, UInt64) { shared.withLock { ($0.next(), $0.next()) } }

    /// A number in -1...1 (53 bits of randomness), for jitter.
    static func signedUnit() -> Double {
        Double(shared.withLock { $0.next() } >> 11) * 0x1p-52 - 1
    }

    private var words = [UInt64](repeating: 0, count: 512)
    private var position = 512

    private mutating func next() -> UInt64 {
        if position >= words.count {
            Self.fill(&words)
            position = 0
        }
        defer { position += 1 }
        return words[position]
    }

    /// Fills `words` from the kernel (`getrandom`), or word by word from `SystemRandomNumberGenerator` if that
    /// fails.
    private static func fill(_ words: inout [UInt64]) {
        let filled = words.withUnsafeMutableBytes { bytes in
            guard let base = bytes.baseAddress else { return false }
            return hp_random_fill(base, bytes.count) == 0
        }
        if !filled {
            var generator = SystemRandomNumberGenerator()
            for index in words.indices { words[index] = generator.next() }
        }
    }
}
