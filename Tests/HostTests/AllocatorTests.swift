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

    /// How many of the `count` pages from `address` are mapped in this process (`/proc/self/pagemap`'s present bit:
    /// unlike `mincore`, which for a file tells whether the page cache holds the page, not whether this process maps it).
    static func mappedPages(_ address: UnsafeRawPointer, count: Int) throws -> Int {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let descriptor = open("/proc/self/pagemap", O_RDONLY)
        try #require(descriptor >= 0)
        defer { close(descriptor) }
        var entries = [UInt64](repeating: 0, count: count)
        let offset = off_t(Int(bitPattern: address) / page * 8)
        let read = entries.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, offset) }
        try #require(read == count * 8)
        return entries.filter { $0 >> 63 == 1 }.count
    }

    @Test(
        "releasing startup pages unmaps read-only file pages, which read back the same, and leaves a read-only mapping with a copied page alone"
    )
    func startupPagesReleased() throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let pages = 16
        let path = TestPaths.temporaryDirectory("pages") + "/file"
        try Data((0..<pages * page).map { UInt8(truncatingIfNeeded: $0 / page + 1) }).write(to: URL(fileURLWithPath: path))
        let descriptor = open(path, O_RDONLY)
        try #require(descriptor >= 0)
        defer { close(descriptor) }
        // As code is mapped: private and read-only. And as relocated data is: private, written once (a copied page),
        // then made read-only; dropping its page would bring back the file's byte.
        let code = try #require(mmap(nil, pages * page, PROT_READ, MAP_PRIVATE, descriptor, 0))
        let relocated = try #require(mmap(nil, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE, descriptor, 0))
        try #require(code != MAP_FAILED && relocated != MAP_FAILED)
        defer {
            munmap(code, pages * page)
            munmap(relocated, pages * page)
        }
        var sum = 0
        for index in 0..<pages { sum += Int(code.load(fromByteOffset: index * page, as: UInt8.self)) }
        relocated.storeBytes(of: 0xEE, toByteOffset: 0, as: UInt8.self)
        try #require(mprotect(relocated, pages * page, PROT_READ) == 0)
        #expect(try Self.mappedPages(code, count: pages) == pages)

        let released = try #require(Allocator.releaseStartupPages())

        #expect(released >= pages * page)
        #expect(try Self.mappedPages(code, count: pages) == 0, "the read-only file pages are still mapped")
        #expect(relocated.load(as: UInt8.self) == 0xEE, "the copied page of a read-only mapping was dropped")
        // Used again, each page is mapped again with the file's bytes.
        var again = 0
        for index in 0..<pages { again += Int(code.load(fromByteOffset: index * page, as: UInt8.self)) }
        #expect(again == sum && sum == (1...pages).reduce(0, +))
    }
}
