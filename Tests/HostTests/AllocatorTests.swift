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

    /// Builds the shared libraries below and a program that loads them and calls the server's
    /// `hp_unmap_readonly_segments` (compiled from `Sources/HostShims`), and runs it. It runs in a process of its own:
    /// released in this process, the pages of the whole test binary and every library would fault back in at once under
    /// the suites running beside it (decisions §37).
    ///
    /// `table_sum` adds up a 64 KiB constant table (its own pages of constant data); the second library, built with text
    /// relocations (`-fno-pic -mcmodel=large -z notext`), has `read_value` read a global through an absolute address the
    /// loader wrote into its code (a copied page of a read-only segment), which a release must leave alone.
    static let program = """
        #include <dlfcn.h>
        #include <stdint.h>
        #include <stdio.h>
        #include <fcntl.h>
        #include <unistd.h>
        #include "hookproxy_host_shims.h"

        /* How many of `count` pages from `address` this process maps (pagemap's present bit). */
        static long mapped(uintptr_t address, long count, long page) {
            int fd = open("/proc/self/pagemap", O_RDONLY);
            if (fd < 0) return -1;
            long present = 0;
            for (long index = 0; index < count; index++) {
                uint64_t entry = 0;
                if (pread(fd, &entry, 8, (off_t)((address / page + index) * 8)) != 8) { close(fd); return -1; }
                present += (long)(entry >> 63);
            }
            close(fd);
            return present;
        }

        int main(int argc, char **argv) {
            if (argc < 3) return 2;
            void *plain = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
            void *relocated = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
            if (!plain || !relocated) { printf("dlopen: %s\\n", dlerror()); return 3; }
            int (*table_sum)(void) = (int (*)(void))dlsym(plain, "table_sum");
            int (*read_value)(void) = (int (*)(void))dlsym(relocated, "read_value");
            uintptr_t table = (uintptr_t)dlsym(plain, "table");
            if (!table_sum || !read_value || !table) { printf("dlsym failed\\n"); return 4; }
            long page = sysconf(_SC_PAGESIZE);
            uintptr_t first = (table + page - 1) / page * page;
            long pages = (long)(((table + 65536) / page * page - first) / page);
            int sum = table_sum(), value = read_value();
            long before = mapped(first, pages, page);
            long long released = hp_unmap_readonly_segments();
            long after = mapped(first, pages, page);
            int sumAgain = table_sum(), valueAgain = read_value();
            printf("pages=%ld page=%ld before=%ld released=%lld after=%ld sum=%d,%d value=%d,%d\\n",
                pages, page, before, released, after, sum, sumAgain, value, valueAgain);
            return 0;
        }
        """

    static func library(_ name: String, textRelocations: Bool, in directory: String) async throws -> String {
        let source = """
            const unsigned char table[65536] = { [0] = 1, [4096] = 2, [65535] = 3 };
            int value = 41;
            int table_sum(void) { int sum = 0; for (int i = 0; i < 65536; i++) sum += table[i]; return sum; }
            /* Page-aligned, with a page-aligned function after it, so that its page is a whole page of the segment. */
            __attribute__((aligned(4096))) int read_value(void) { return value + 1; }
            __attribute__((aligned(4096))) int after_read_value(void) { return 0; }
            """
        try source.write(toFile: directory + "/\(name).c", atomically: true, encoding: .utf8)
        let flags = textRelocations ? "-fno-pic -mcmodel=large -Wl,-z,notext" : "-fPIC"
        let built = try await shell("cc -shared -O1 \(flags) -o '\(directory)/\(name).so' '\(directory)/\(name).c' 2>&1")
        try #require(built.status == 0, "\(built.output)")
        return directory + "/\(name).so"
    }

    @Test(
        "releasing startup pages unmaps loaded code and constant data, which read back the same, and leaves a segment with relocated code alone"
    )
    func startupPagesReleased() async throws {
        let directory = TestPaths.temporaryDirectory("pages")
        let plain = try await Self.library("plain", textRelocations: false, in: directory)
        let relocated = try await Self.library("relocated", textRelocations: true, in: directory)
        try Self.program.write(toFile: directory + "/main.c", atomically: true, encoding: .utf8)
        let shims = TestPaths.packageRoot + "/Sources/HostShims"
        let built = try await shell(
            "cc -O1 -I '\(shims)/include' -o '\(directory)/release' '\(directory)/main.c' '\(shims)/hookproxy_host_shims.c' -ldl 2>&1")
        try #require(built.status == 0, "\(built.output)")

        let run = try await shell("'\(directory)/release' '\(plain)' '\(relocated)' 2>&1")

        // Without the check for copied pages, the relocated code would read address 0 and the program would crash.
        try #require(run.status == 0, "\(run.output)")
        var fields: [String: String] = [:]
        for pair in run.output.split(whereSeparator: \.isWhitespace) {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        let pages = try #require(fields["pages"].flatMap { Int($0) }, "\(run.output)")
        let page = try #require(fields["page"].flatMap { Int($0) }, "\(run.output)")
        #expect(pages >= 15, "\(run.output)")
        #expect(fields["before"] == "\(pages)", "the table was not mapped before the release: \(run.output)")
        #expect((fields["released"].flatMap { Int($0) } ?? 0) >= pages * page, "\(run.output)")
        #expect(fields["after"] == "0", "the library's constant pages are still mapped: \(run.output)")
        // Used again: mapped again with the file's bytes.
        #expect(fields["sum"] == "6,6", "\(run.output)")
        #expect(fields["value"] == "42,42", "\(run.output)")
    }
}
