import Foundation
import HostShims
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The in-flight journal: a small memory-mapped file in which the server notes, before each delivery attempt and before
/// each call into a plugin that runs in process, what it is about to do, and clears the note after. It costs a few
/// stores into mapped memory (no system call, no fsync): the kernel keeps the pages when the process dies, so the next
/// start reads what was in flight at the crash (decisions §30).
///
/// - A delivery inside an in-process plugin when the process crashed (the crash handler records the crashing thread's
///   slot) is quarantined at the next start: dead, with the reason, never resumed into the same crash.
/// - Every other delivery that was being attempted counts one abnormal exit; after `max_crashes` in a row it is
///   quarantined too, whatever the cause.
/// - A request body that crashed an in-process mapper is remembered (its SHA-256, per source, across restarts) and
///   refused with 503 instead of being mapped again.
///
/// The file is locked (`flock`) while a server uses it: two servers never share one.
///
/// `@unchecked Sendable`: the mapping is written through raw pointers; each slot is owned by one caller between
/// ``begin(_:)`` and ``end(_:)`` (handed out under `free`'s lock), and the header and poison list are written under
/// `poisonLock`.
final class CallJournal: @unchecked Sendable {
    /// What a slot was noting.
    enum Kind: UInt32, Sendable {
        /// A delivery attempt in progress.
        case attempt = 1
        /// A format call inside an in-process plugin.
        case format = 2
        /// A map call inside an in-process plugin.
        case map = 3
        /// An instance being created or destroyed in process.
        case instance = 4
    }

    /// One note, as written and as read back after a crash.
    struct Entry: Sendable, Equatable {
        var kind: Kind
        /// The delivery's id (attempt, format), or empty.
        var id: String = ""
        /// The destination (attempt, format) or source (map).
        var name: String = ""
        /// The plugin (format, map, instance).
        var plugin: String = ""
        /// The request body's SHA-256 (map).
        var digest: [UInt8] = []
        var startedAt: Int64 = 0
    }

    /// A request body that crashed an in-process mapper.
    struct PoisonedPayload: Sendable, Equatable {
        var source: String
        var plugin: String
        var digest: [UInt8]
    }

    /// What the journal held when it was opened: the run before this one, if it did not stop cleanly.
    struct PreviousRun: Sendable {
        var pid: Int32
        var startedAt: Int64
        /// The note of the thread that crashed inside an in-process plugin, and the signal (0: it called `exit()`).
        var crashed: (entry: Entry, signal: Int32)?
        /// Every note in place when it ended.
        var entries: [Entry]
    }

    /// A slot handed out by ``begin(_:)``.
    struct Slot: Sendable {
        let index: Int32
    }

    let path: String
    let previousRun: PreviousRun?
    private let descriptor: Int32
    private let base: UnsafeMutableRawPointer
    private let free = Mutex<[Int32]>([])
    private let poisonLock = Mutex(())
    private let closed = Atomic<Bool>(false)

    // MARK: Layout

    static let slotCount: Int32 = 4096
    private static let magic: [UInt8] = Array("HPJRNL01".utf8)
    private static let headerSize = 256
    private static let poisonCount = 64
    private static let poisonSize = 256
    private static let slotSize = 512
    private static let fieldSize = 128
    private static var slotsOffset: Int { headerSize + poisonCount * poisonSize }
    private static var fileSize: Int { slotsOffset + Int(slotCount) * slotSize }

    // Header offsets.
    private static let stateOffset = 16
    private static let crashedSlotOffset = 20
    private static let crashSignalOffset = 24
    private static let pidOffset = 28
    private static let startedOffset = 32
    private static let poisonNextOffset = 40

    private enum State: UInt32 {
        case running = 1
        case stopped = 2
    }

    /// The journal whose header the crash handler writes to (one per process: the serving one).
    private static let armed = Mutex<ObjectIdentifier?>(nil)

    // MARK: Opening

    /// A journal could not be opened.
    struct OpenError: Error, CustomStringConvertible {
        let description: String
        /// Another live server holds the file.
        var inUse = false
    }

    /// Opens (creating when needed) the journal at `path`, reads what the previous run left, and starts this run's.
    /// With `alternates`, a journal already locked by a live server is passed over for `path-2`, `path-3`, ... (several
    /// instances on one machine sharing a PostgreSQL database).
    static func open(path: String, alternates: Int = 0) throws(OpenError) -> CallJournal {
        var failure: OpenError?
        candidates: for attempt in 0...alternates {
            let candidate = attempt == 0 ? path : "\(path)-\(attempt + 1)"
            switch tryOpen(path: candidate) {
            case .success(let journal): return journal
            case .failure(let error):
                failure = error
                if !error.inUse { break candidates }
            }
        }
        throw failure ?? OpenError(description: "cannot open the in-flight journal \(path)")
    }

    private static func tryOpen(path: String) -> Result<CallJournal, OpenError> {
        try? FileManager.default.createDirectory(
            atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path, withIntermediateDirectories: true)
        let descriptor = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            return .failure(OpenError(description: "cannot open the in-flight journal \(path): \(String(cString: strerror(errno)))"))
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            Glibc.close(descriptor)
            return .failure(
                OpenError(
                    description: "the in-flight journal \(path) is in use by another hookproxy serve (set storage.journal)", inUse: true))
        }
        var status = stat()
        let existingSize = fstat(descriptor, &status) == 0 ? Int(status.st_size) : 0
        guard ftruncate(descriptor, off_t(fileSize)) == 0,
            let mapped = mmap(nil, fileSize, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0), mapped != MAP_FAILED
        else {
            Glibc.close(descriptor)
            return .failure(OpenError(description: "cannot map the in-flight journal \(path): \(String(cString: strerror(errno)))"))
        }
        return .success(CallJournal(path: path, descriptor: descriptor, base: mapped, existing: existingSize == fileSize))
    }

    private init(path: String, descriptor: Int32, base: UnsafeMutableRawPointer, existing: Bool) {
        self.path = path
        self.descriptor = descriptor
        self.base = base
        let readable = existing && Array(UnsafeRawBufferPointer(start: base, count: 8)) == Self.magic
        previousRun = readable ? Self.readPrevious(base) : nil
        let poisoned = readable ? Self.readPoison(base) : []
        // This run's header, poison list carried over, empty slots.
        memset(base, 0, Self.fileSize)
        for (index, byte) in Self.magic.enumerated() { base.storeBytes(of: byte, toByteOffset: index, as: UInt8.self) }
        base.storeBytes(of: UInt32(1), toByteOffset: 8, as: UInt32.self)
        base.storeBytes(of: UInt32(Self.slotCount), toByteOffset: 12, as: UInt32.self)
        base.storeBytes(of: Int32(-1), toByteOffset: Self.crashedSlotOffset, as: Int32.self)
        base.storeBytes(of: UInt32(bitPattern: getpid()), toByteOffset: Self.pidOffset, as: UInt32.self)
        base.storeBytes(of: Clock.milliseconds(), toByteOffset: Self.startedOffset, as: Int64.self)
        for payload in poisoned { writePoison(payload) }
        base.storeBytes(of: State.running.rawValue, toByteOffset: Self.stateOffset, as: UInt32.self)
        free.withLock { $0 = Array((0..<Self.slotCount).reversed()) }
        // The crash handler records the crashing plugin call's slot in this header.
        Self.armed.withLock { owner in
            owner = ObjectIdentifier(self)
            hp_crash_record_install(
                (base + Self.crashedSlotOffset).assumingMemoryBound(to: Int32.self),
                (base + Self.crashSignalOffset).assumingMemoryBound(to: Int32.self))
        }
    }

    /// Marks the run as stopped cleanly and releases the file (its 2 MB mapping is kept for the life of the process).
    func close() {
        guard !closed.exchange(true, ordering: .sequentiallyConsistent) else { return }
        Self.armed.withLock { owner in
            guard owner == ObjectIdentifier(self) else { return }
            hp_crash_record_disarm()
            hp_crash_record_install(nil, nil)
            owner = nil
        }
        base.storeBytes(of: State.stopped.rawValue, toByteOffset: Self.stateOffset, as: UInt32.self)
        msync(base, Self.fileSize, MS_ASYNC)
        // The mapping stays: a plugin thread stuck in a call that missed its deadline may still return and end its note
        // (it sees `closed` and writes nothing, but must never find the memory gone).
        flock(descriptor, LOCK_UN)
        Glibc.close(descriptor)
    }

    deinit { close() }

    // MARK: Notes

    /// Notes `entry` in a free slot; nil when every slot is taken (the note is then skipped).
    func begin(_ entry: Entry) -> Slot? {
        guard !closed.load(ordering: .relaxed), let index = free.withLock({ $0.popLast() }) else { return nil }
        let slot = slotPointer(index)
        slot.storeBytes(of: entry.startedAt == 0 ? Clock.milliseconds() : entry.startedAt, toByteOffset: 8, as: Int64.self)
        for offset in 0..<32 {
            slot.storeBytes(of: offset < entry.digest.count ? entry.digest[offset] : 0, toByteOffset: 16 + offset, as: UInt8.self)
        }
        Self.writeField(entry.id, at: slot + 48)
        Self.writeField(entry.name, at: slot + 48 + Self.fieldSize)
        Self.writeField(entry.plugin, at: slot + 48 + 2 * Self.fieldSize)
        // The kind last: a note is in use only once it is complete.
        slot.storeBytes(of: entry.kind.rawValue, toByteOffset: 0, as: UInt32.self)
        return Slot(index: index)
    }

    /// Clears a note made by ``begin(_:)``.
    func end(_ slot: Slot?) {
        guard let slot, !closed.load(ordering: .relaxed) else { return }
        slotPointer(slot.index).storeBytes(of: UInt32(0), toByteOffset: 0, as: UInt32.self)
        free.withLock { $0.append(slot.index) }
    }

    /// Runs `body` (a call into an in-process plugin) with `entry` noted and the calling thread marked as inside it, so
    /// that a crash is charged to this call.
    func inside<T>(_ entry: Entry, _ body: () -> T) -> T {
        let slot = begin(entry)
        if let slot { hp_crash_enter(slot.index) }
        defer {
            hp_crash_leave()
            end(slot)
        }
        return body()
    }

    // MARK: Poisoned payloads

    /// The remembered crash of an in-process mapper on this body, if any.
    func poisoned(source: String, digest: [UInt8]) -> PoisonedPayload? {
        poisonLock.withLock { _ in Self.readPoison(base).first { $0.source == source && $0.digest == digest } }
    }

    /// Remembers a body that crashed an in-process mapper (the oldest of 64 is forgotten).
    func recordPoison(_ payload: PoisonedPayload) {
        poisonLock.withLock { _ in
            guard !Self.readPoison(base).contains(payload) else { return }
            writePoison(payload)
        }
    }

    private func writePoison(_ payload: PoisonedPayload) {
        let next = Int(base.load(fromByteOffset: Self.poisonNextOffset, as: UInt32.self)) % Self.poisonCount
        let entry = base + Self.headerSize + next * Self.poisonSize
        for (offset, byte) in payload.digest.prefix(32).enumerated() {
            entry.storeBytes(of: byte, toByteOffset: 8 + offset, as: UInt8.self)
        }
        Self.writeField(payload.source, at: entry + 40)
        Self.writeField(payload.plugin, at: entry + 40 + Self.fieldSize)
        entry.storeBytes(of: UInt32(1), toByteOffset: 0, as: UInt32.self)
        base.storeBytes(of: UInt32((next + 1) % Self.poisonCount), toByteOffset: Self.poisonNextOffset, as: UInt32.self)
    }

    // MARK: Reading

    private func slotPointer(_ index: Int32) -> UnsafeMutableRawPointer {
        base + Self.slotsOffset + Int(index) * Self.slotSize
    }

    private static func readPrevious(_ base: UnsafeMutableRawPointer) -> PreviousRun? {
        guard base.load(fromByteOffset: stateOffset, as: UInt32.self) == State.running.rawValue else { return nil }
        let count = min(Int32(bitPattern: base.load(fromByteOffset: 12, as: UInt32.self)), slotCount)
        var entries: [Int32: Entry] = [:]
        for index in 0..<max(0, count) {
            let slot = base + slotsOffset + Int(index) * slotSize
            guard let kind = Kind(rawValue: slot.load(fromByteOffset: 0, as: UInt32.self)) else { continue }
            entries[index] = Entry(
                kind: kind, id: readField(slot + 48), name: readField(slot + 48 + fieldSize), plugin: readField(slot + 48 + 2 * fieldSize),
                digest: (0..<32).map { slot.load(fromByteOffset: 16 + $0, as: UInt8.self) },
                startedAt: slot.load(fromByteOffset: 8, as: Int64.self))
        }
        let crashedSlot = base.load(fromByteOffset: crashedSlotOffset, as: Int32.self)
        let signal = base.load(fromByteOffset: crashSignalOffset, as: Int32.self)
        return PreviousRun(
            pid: Int32(bitPattern: base.load(fromByteOffset: pidOffset, as: UInt32.self)),
            startedAt: base.load(fromByteOffset: startedOffset, as: Int64.self),
            crashed: entries[crashedSlot].map { ($0, signal) },
            entries: entries.sorted { $0.key < $1.key }.map(\.value))
    }

    private static func readPoison(_ base: UnsafeMutableRawPointer) -> [PoisonedPayload] {
        (0..<poisonCount).compactMap { index in
            let entry = base + headerSize + index * poisonSize
            guard entry.load(fromByteOffset: 0, as: UInt32.self) == 1 else { return nil }
            return PoisonedPayload(
                source: readField(entry + 40), plugin: readField(entry + 40 + fieldSize),
                digest: (0..<32).map { entry.load(fromByteOffset: 8 + $0, as: UInt8.self) })
        }
    }

    /// A text field: a `u16` length and up to 126 bytes (longer text is cut).
    private static func writeField(_ text: String, at pointer: UnsafeMutableRawPointer) {
        let bytes = Array(text.utf8.prefix(fieldSize - 2))
        pointer.storeBytes(of: UInt16(bytes.count), as: UInt16.self)
        for (offset, byte) in bytes.enumerated() { pointer.storeBytes(of: byte, toByteOffset: 2 + offset, as: UInt8.self) }
    }

    private static func readField(_ pointer: UnsafeMutableRawPointer) -> String {
        let length = min(Int(pointer.load(as: UInt16.self)), fieldSize - 2)
        return String(decoding: UnsafeRawBufferPointer(start: pointer + 2, count: length), as: UTF8.self)
    }
}
