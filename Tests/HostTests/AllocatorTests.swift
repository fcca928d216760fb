import Foundation
import Testing

@testable import Host

/// The server's allocator settings: free memory stays with the allocator while the server is busy (no `madvise` and
/// page faults on every few deliveries) and ``MemoryTrimmer``'s trim gives it back.
@Suite("Allocator")
struct AllocatorTests {
    /// Resident memory in bytes, from /proc/self/statm.
    static func resident() throws -> Int {
        let fields = try String(contentsOfFile: "/proc/self/statm", encoding: .utf8).split(separator: " ")
        let pages = try #require(fields.count > 1 ? Int(fields[1]) : nil)
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    @Test("freed memory is kept until a trim gives it back")
    func keptThenTrimmed() throws {
        #expect(Allocator.tuneForServer())
        let blockSize = 64 << 10
        let total = 24 << 20
        // Other suites allocate and free in parallel: a run whose numbers they blurred is tried again.
        var outcome: (peak: Int, afterFree: Int, afterTrim: Int) = (0, 0, 0)
        for _ in 0..<3 {
            let blocks = (0..<(total / blockSize)).map { _ in
                let block = UnsafeMutableRawPointer.allocate(byteCount: blockSize, alignment: 16)
                block.initializeMemory(as: UInt8.self, repeating: 1, count: blockSize)
                return block
            }
            let peak = try Self.resident()
            for block in blocks.reversed() { block.deallocate() }
            let afterFree = try Self.resident()
            Allocator.trim()
            let afterTrim = try Self.resident()
            outcome = (peak, afterFree, afterTrim)
            if afterFree > peak - (8 << 20), afterTrim < afterFree - (12 << 20) { break }
        }
        #expect(outcome.afterFree > outcome.peak - (8 << 20), "freeing 24 MiB gave back more than 8 MiB at once: \(outcome)")
        #expect(outcome.afterTrim < outcome.afterFree - (12 << 20), "the trim gave back less than 12 MiB: \(outcome)")
    }
}
