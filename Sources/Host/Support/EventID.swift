/// Time-ordered identifiers (UUIDv7, RFC 9562): sortable by creation time, unique without coordination.
enum EventID {
    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// Written straight into the string's storage: this runs for every event and every delivery.
    static func make(milliseconds: Int64 = Clock.milliseconds()) -> String {
        let (first, second) = RandomWords.pair()
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
}
