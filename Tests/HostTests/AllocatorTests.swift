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

    /// A shared library built for the test: `table_sum` adds up a 64 KiB constant table (its own pages of constant
    /// data), and, built with text relocations (`-fno-pic -mcmodel=large -z notext`), `read_value` reads a global
    /// through an absolute address the loader wrote into its code (a copied page of a read-only segment).
    static func library(textRelocations: Bool) async throws -> UnsafeMutableRawPointer {
        let directory = TestPaths.temporaryDirectory("pages")
        let source = """
            const unsigned char table[65536] = { [0] = 1, [4096] = 2, [65535] = 3 };
            int value = 41;
            int table_sum(void) { int sum = 0; for (int i = 0; i < 65536; i++) sum += table[i]; return sum; }
            /* Page-aligned, with a page-aligned function after it, so that its page is a whole page of the segment. */
            __attribute__((aligned(4096))) int read_value(void) { return value + 1; }
            __attribute__((aligned(4096))) int after_read_value(void) { return 0; }
            """
        try source.write(toFile: directory + "/lib.c", atomically: true, encoding: .utf8)
        let flags = textRelocations ? "-fno-pic -mcmodel=large -Wl,-z,notext" : "-fPIC"
        let built = try await shell("cc -shared -O1 \(flags) -o '\(directory)/lib.so' '\(directory)/lib.c'")
        try #require(built.status == 0, "\(built.output)")
        return try #require(dlopen(directory + "/lib.so", RTLD_NOW | RTLD_LOCAL), "\(String(cString: dlerror()))")
    }

    @Test(
        "releasing startup pages unmaps loaded code and constant data, which read back the same, and leaves a segment with relocated code alone"
    )
    func startupPagesReleased() async throws {
        let plain = try await Self.library(textRelocations: false)
        let relocated = try await Self.library(textRelocations: true)
        typealias Function = @convention(c) () -> Int32
        let tableSum = unsafeBitCast(try #require(dlsym(plain, "table_sum")), to: Function.self)
        let readValue = unsafeBitCast(try #require(dlsym(relocated, "read_value")), to: Function.self)
        let table = try #require(dlsym(plain, "table"))
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        // The whole pages inside the table.
        let first = (Int(bitPattern: table) + page - 1) / page * page
        let pages = (Int(bitPattern: table) + 65536) / page * page / page - first / page
        let inner = try #require(UnsafeRawPointer(bitPattern: first))
        #expect(tableSum() == 6)
        #expect(readValue() == 42)
        #expect(try Self.mappedPages(inner, count: pages) == pages)

        let released = try #require(Allocator.releaseStartupPages())

        #expect(released >= pages * page)
        #expect(try Self.mappedPages(inner, count: pages) == 0, "the library's constant pages are still mapped")
        // Used again: mapped again with the file's bytes; the relocated code still holds the loader's address (dropped,
        // it would read address 0 and crash the test process).
        #expect(tableSum() == 6)
        #expect(readValue() == 42)
    }
}
