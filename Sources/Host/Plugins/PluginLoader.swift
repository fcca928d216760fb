import Foundation
import Logging
import PluginABI
import Synchronization

/// Finds and loads plugin libraries: every `*.so` in the configured plugins directory, and the `libhookproxy-*.so`
/// files beside the `hookproxy` executable (so plugins built by `swift build` are found without copying).
///
/// Discovery never runs plugin code in this process: each file is opened by a probe worker (``PluginProbe``), so a
/// library that crashes while it loads is refused instead of ending the host (at every start). Only plugins that run
/// `in_process` are then opened here too (``openNative(file:)``), once per process and never closed.
enum PluginLoader {
    /// The file name pattern for plugins found beside the executable.
    static let bundledPrefix = "libhookproxy-"

    /// Everything one discovery found.
    struct Catalog: Sendable {
        /// Accepted plugins by declared name.
        var plugins: [String: LoadedPlugin] = [:]
        /// Files that were refused, in discovery order.
        var refusals: [PluginRefusal] = []
    }

    /// The directory holding the running executable.
    static var executableDirectory: String {
        let path = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: path).deletingLastPathComponent().path
    }

    /// The plugin files of `directory` (all `.so` files) and beside the executable (`libhookproxy-*.so`) that an operator
    /// controls, and the refusals of those that someone else could have written (``untrusted(_:)``).
    static func files(directory: String, includeExecutableDirectory: Bool = true) -> (files: [String], refusals: [PluginRefusal]) {
        var found = soFiles(in: directory, prefix: "")
        if includeExecutableDirectory {
            let bundled = soFiles(in: executableDirectory, prefix: bundledPrefix)
            found.files += bundled.files.filter { !found.files.contains($0) }
            found.refusals += bundled.refusals
        }
        return found
    }

    /// Discovers plugins in `directory` and beside the executable, each checked in a probe worker whose memory is
    /// capped at `memoryLimit` bytes.
    static func discover(
        directory: String, includeExecutableDirectory: Bool = true, memoryLimit: Int = PluginsConfig.defaultMemoryLimit, logger: Logger
    ) async -> Catalog {
        let (files, untrustedFiles) = files(directory: directory, includeExecutableDirectory: includeExecutableDirectory)
        let results = await PluginProbe.identify(files, memoryLimit: memoryLimit)
        var catalog = Catalog()
        catalog.refusals = untrustedFiles
        for file in files {
            switch results[file] ?? .failure(PluginRefusal(file: file, reason: "was not checked")) {
            case .success(let plugin):
                if let existing = catalog.plugins[plugin.name] {
                    if existing.file == plugin.file { continue }
                    catalog.refusals.append(
                        PluginRefusal(file: file, reason: "duplicate plugin name '\(plugin.name)' (already loaded from \(existing.file))"))
                } else {
                    catalog.plugins[plugin.name] = plugin
                    logger.debug(
                        "plugin loaded",
                        metadata: ["plugin": "\(plugin.name)", "version": "\(plugin.version)", "file": "\(plugin.file)"])
                }
            case .failure(let refusal):
                catalog.refusals.append(refusal)
            }
        }
        for refusal in catalog.refusals { logger.warning("\(refusal.description)") }
        return catalog
    }

    /// The `.so` files named `prefix*` in `directory` (dotfiles are ignored), each resolved through symlinks and accepted
    /// only when it, the directory and the target's directory pass ``untrusted(_:)``.
    static func soFiles(in directory: String, prefix: String) -> (files: [String], refusals: [PluginRefusal]) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return ([], []) }
        let candidates = names.filter { !$0.hasPrefix(".") && $0.hasSuffix(".so") && $0.hasPrefix(prefix) }.sorted()
        guard !candidates.isEmpty else { return ([], []) }
        let directoryProblem = untrusted(directory)
        var files: [String] = []
        var refusals: [PluginRefusal] = []
        for name in candidates {
            let path = URL(fileURLWithPath: directory).appendingPathComponent(name).standardizedFileURL.path
            if let directoryProblem {
                refusals.append(PluginRefusal(file: path, reason: directoryProblem))
                continue
            }
            guard let resolved = realPath(path) else {
                refusals.append(PluginRefusal(file: path, reason: "cannot be resolved (\(String(cString: strerror(errno))))"))
                continue
            }
            let targetDirectory = URL(fileURLWithPath: resolved).deletingLastPathComponent().path
            let sameDirectory = targetDirectory == realPath(directory)
            let problem = (untrusted(resolved, isFile: true) ?? (sameDirectory ? nil : untrusted(targetDirectory)))
                .map { resolved == path ? $0 : "it links to \(resolved), and \($0)" }
            if let problem {
                refusals.append(PluginRefusal(file: path, reason: problem))
            } else if !files.contains(resolved) {
                files.append(resolved)
            }
        }
        return (files, refusals)
    }

    /// Why a plugin file or directory may not be trusted, or nil when only root or the user hookproxy runs as can
    /// change it: a group- or world-writable one (whatever its sticky bit) or one owned by another non-root user lets
    /// someone else put code into this process. Phrased to follow "plugin FILE refused: ".
    static func untrusted(_ path: String, isFile: Bool = false) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return "cannot be examined (\(String(cString: strerror(errno))))" }
        let what = isFile ? "it" : "its directory \(path)"
        let kind = info.st_mode & S_IFMT
        if isFile, kind != S_IFREG { return "it is not a regular file" }
        if !isFile, kind != S_IFDIR { return "\(what) is not a directory" }
        let writable = info.st_mode & (S_IWGRP | S_IWOTH)
        if writable != 0 {
            let mode = String(info.st_mode & 0o7777, radix: 8)
            let who = writable & S_IWOTH != 0 ? "world" : "group"
            return "\(what) is \(who)-writable (mode 0\(mode)), so another user could replace the code; chmod go-w it"
        }
        let owner = info.st_uid
        if owner != 0, owner != geteuid() {
            return "\(what) is owned by uid \(owner), neither root nor the user hookproxy runs as (uid \(geteuid()))"
        }
        return nil
    }

    /// The canonical path of `path` (every symlink resolved), or nil with `errno` set.
    private static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    private static let opened = Mutex<[String: Result<NativePlugin, PluginRefusal>]>([:])

    /// Opens one library in this process (once per process; later calls return the first result) and checks its
    /// table. Runs the library's code: the host calls it only for plugins that a probe loaded and that run in process.
    static func openNative(file: String) -> Result<NativePlugin, PluginRefusal> {
        opened.withLock { cache in
            if let result = cache[file] { return result }
            let result = open(file: file)
            cache[file] = result
            return result
        }
    }

    private static func open(file: String) -> Result<NativePlugin, PluginRefusal> {
        func refuse(_ reason: String) -> Result<NativePlugin, PluginRefusal> { .failure(PluginRefusal(file: file, reason: reason)) }
        guard let handle = dlopen(file, RTLD_NOW | RTLD_LOCAL) else {
            let message = dlerror().map { String(cString: $0) } ?? "unknown error"
            return refuse("cannot be loaded: \(message)")
        }
        // The library is never closed: a plugin's code and static data must outlive every instance and table pointer.
        guard let symbol = dlsym(handle, HOOKPROXY_PLUGIN_ENTRY_SYMBOL) else {
            return refuse("it does not export the entry symbol '\(HOOKPROXY_PLUGIN_ENTRY_SYMBOL)' (is it a hookproxy plugin?)")
        }
        let entry = unsafeBitCast(symbol, to: hookproxy_plugin_entry_fn.self)
        let host = HostCallbacks.make(for: file)
        guard let table = entry(HOOKPROXY_ABI_VERSION, host) else {
            return refuse("its entry symbol returned no table (the plugin declined to work with ABI version \(HOOKPROXY_ABI_VERSION))")
        }
        let abiVersion = table.pointee.abi_version
        guard abiVersion == HOOKPROXY_ABI_VERSION else {
            return refuse("it was built for plugin ABI version \(abiVersion), this hookproxy speaks ABI version \(HOOKPROXY_ABI_VERSION)")
        }
        let size = Int(table.pointee.struct_size)
        guard size >= MemoryLayout<hookproxy_plugin>.size else {
            return refuse(
                "its table is \(size) bytes, smaller than the \(MemoryLayout<hookproxy_plugin>.size) bytes of ABI version \(HOOKPROXY_ABI_VERSION)"
            )
        }
        guard let namePointer = table.pointee.name, let name = String(validatingCString: namePointer), !name.isEmpty,
            name.utf8.count <= 64,
            name.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == "_") })
        else {
            return refuse("its table has no valid name (lowercase letters, digits, '-' and '_', at most 64)")
        }
        let version = table.pointee.version.flatMap { String(validatingCString: $0) }.map { String($0.prefix(64)) } ?? "unknown"
        let capabilities = table.pointee.capabilities
        let known = HOOKPROXY_CAPABILITY_FORMATTER | HOOKPROXY_CAPABILITY_MAPPER
        guard capabilities & known != 0, capabilities & ~known == 0 else {
            return refuse(
                "plugin '\(name)' declares capabilities 0x\(String(capabilities, radix: 16)); expected formatter (0x1), mapper (0x2) or both"
            )
        }
        var missing: [String] = []
        if table.pointee.on_instance_new == nil { missing.append("on_instance_new") }
        if table.pointee.on_instance_destroy == nil { missing.append("on_instance_destroy") }
        if table.pointee.on_output_release == nil { missing.append("on_output_release") }
        if capabilities & HOOKPROXY_CAPABILITY_FORMATTER != 0, table.pointee.on_format == nil { missing.append("on_format") }
        if capabilities & HOOKPROXY_CAPABILITY_MAPPER != 0, table.pointee.on_map == nil { missing.append("on_map") }
        guard missing.isEmpty else {
            return refuse("plugin '\(name)' has no \(missing.joined(separator: ", ")) in its table")
        }
        let identity = LoadedPlugin(name: name, version: version, capabilities: capabilities, abiVersion: abiVersion, file: file)
        return .success(NativePlugin(identity: identity, table: table))
    }
}
