import Foundation
import Testing

@testable import Host

@Suite("Event ids")
struct EventIDTests {
    @Test("ids are UUIDv7 with their time, unique across batches of random bits and threads")
    func uniqueAndWellFormed() async throws {
        // Eight tasks of 2,000 ids each use many 4 KiB batches (256 ids each) at once.
        let ids = await withTaskGroup(of: [String].self) { group in
            for _ in 0..<8 { group.addTask { (0..<2_000).map { _ in EventID.make(milliseconds: 1_700_000_000_123) } } }
            var all: [String] = []
            for await batch in group { all += batch }
            return all
        }
        #expect(ids.count == 16_000)
        #expect(Set(ids).count == ids.count, "no id repeats")
        for id in ids.prefix(600) {
            let uuid = try #require(UUID(uuidString: id), "\(id) is a UUID")
            #expect(id == id.lowercased())
            let bytes = withUnsafeBytes(of: uuid.uuid) { Array($0) }
            #expect(bytes[6] >> 4 == 7, "version 7")
            #expect(bytes[8] >> 6 == 0b10, "variant")
            let time = bytes[0..<6].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            #expect(time == 1_700_000_000_123)
        }
        // The random part differs in many bits between consecutive ids, not by a counter.
        let lows = ids.prefix(1_000).map { $0.suffix(12) }
        #expect(Set(lows).count == lows.count)
    }

    @Test("jitter is spread over -1...1")
    func jitter() {
        let values = (0..<10_000).map { _ in RandomWords.signedUnit() }
        #expect(values.allSatisfy { (-1.0...1.0).contains($0) })
        #expect(values.filter { $0 < -0.9 }.count > 300 && values.filter { $0 > 0.9 }.count > 300, "both ends are reached")
        #expect(abs(values.reduce(0, +) / Double(values.count)) < 0.05, "centred on 0")
    }
}
