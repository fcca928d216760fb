import HostShims
import Synchronization

/// Time-ordered identifiers (UUIDv7, RFC 9562): sortable by creation time, unique without coordination.
enum EventID {
    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// Written straight into the string's storage: this runs for every event and every delivery.
    static func make(milliseconds: Int64 = Clock.milliseconds()) -> String {
        let (first, second) = randomBits.withLock { $0.next() }
        let time = UInt64(clamping: milliseconds)
        // 48 bits of time, version 7, 12 random bits; variant 0b10, 62 random bits.
        let high = (time << 16) | 0x7000 | (first & 0x0FFF)
        let low = (second & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000
        return String(unsafeUninitializedCapacity: 36) { buffer in
            var position = 0
            func write(_ word: UInt64, dashesBefore first: Int, _ second: Int) {
                for nibble in 0..<16 {
                    if nibble == first || nibble == second {
                        buffer[position] = UInt8(ascii: "-")
                        position += 1
                    }
                    buffer[position] = hexDigits[Int((word >> (60 - 4 * UInt64(nibble))) & 0xF)]
                    position += 1
                }
            }
            write(high, dashesBefore: 8, 12)
            write(low, dashesBefore: 0, 4)
            return position
        }
    }

    /// The ids' random bits, read from the kernel's generator 4 KiB at a time: an ingested request makes three ids
    /// (request, event, delivery), and `SystemRandomNumberGenerator` makes a `getrandom` call for every 8 bytes.
    private static let randomBits = Mutex(RandomWords())

    /// Random 64-bit words from the system's cryptographically secure generator, in batches.
    struct RandomWords: ~Copyable {
        private var words = [UInt64](repeating: 0, count: 512)
        private var position = 512

        /// Two words no other call gets.
        mutating func next() -> (UInt64, UInt64) {
            if position + 2 > words.count {
                Self.fill(&words)
                position = 0
            }
            defer { position += 2 }
            return (words[position], words[position + 1])
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
}
