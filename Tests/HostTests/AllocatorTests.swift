import Foundation
import Testing

@testable import Host

#if canImport(Glibc)
    import Glibc
#endif

/// The server's allocator settings. That free memory stays with the allocator while the server is busy cannot be told
/// in this process (glibc raises its thresholds by itself after large frees, and the suite's history decides whether
/// it has): the drain profile shows it (docs/benchmarks.md, decisions §35). What is tested here is that the settings
/// are taken and that ``MemoryTrimmer``'s trim gives back free memory that no free would.
@Suite("Allocator")
struct AllocatorTests {
    /// The share of the pages inside `blocks` (freed, but still the allocator's) that are resident, from `mincore`,
    /// which reads the page tables without touching the pages. Other suites run in parallel, so the process's RSS
    /// cannot tell; these pages are this thread's arena's.
    static func residentShare(_ blocks: [UnsafeMutableRawPointer], blockSize: Int) -> Double {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var resident = 0
        var total = 0
        for block in blocks {
            // The whole pages inside the block, past the allocator's header.
            let start = (Int(bitPattern: block) + page - 1) / page * page
            let end = (Int(bitPattern: block) + blockSize) / page * page
            guard end > start, let address = UnsafeMutableRawPointer(bitPattern: start) else { continue }
            var vector = [UInt8](repeating: 0, count: (end - start) / page)
            guard mincore(address, end - start, &vector) == 0 else { continue }
            resident += vector.filter { $0 & 1 == 1 }.count
            total += vector.count
        }
        return total == 0 ? 0 : Double(resident) / Double(total)
    }

    static func allocate(_ count: Int, _ blockSize: Int) -> [UnsafeMutableRawPointer] {
        (0..<count).map { _ in
            let block = UnsafeMutableRawPointer.allocate(byteCount: blockSize, alignment: 16)
            block.initializeMemory(as: UInt8.self, repeating: 1, count: blockSize)
            return block
        }
    }

    @Test("a trim gives back the free memory between blocks still in use")
    func trimmed() {
        #expect(Allocator.tuneForServer())
        let blockSize = 64 << 10
        let blocks = Self.allocate(96, blockSize)
        // Every other block freed: each is free memory between two in use, which no free ever gives back.
        let freed = blocks.enumerated().filter { $0.offset % 2 == 1 }.map(\.element)
        for block in freed { block.deallocate() }
        let afterFree = Self.residentShare(freed, blockSize: blockSize)
        Allocator.trim()
        let afterTrim = Self.residentShare(freed, blockSize: blockSize)
        for (index, block) in blocks.enumerated() where index % 2 == 0 { block.deallocate() }
        #expect(afterFree > 0.9)
        #expect(afterTrim < 0.5, "the trim left \(Int(afterTrim * 100))% of 3 MiB freed resident")
    }
}
