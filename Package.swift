// swift-tools-version:6.2

import PackageDescription

/// Plugins bind their own symbols first (`-Bsymbolic`): a plugin's statically linked copy of PluginKit must never be
/// interposed by the host's copy or another plugin's, whatever version each was built with.
let pluginLinkerSettings: [LinkerSetting] = [.unsafeFlags(["-Xlinker", "-Bsymbolic"])]

/// Our own code builds without warnings (dependencies are not held to it).
let strict: [SwiftSetting] = [.treatAllWarnings(as: .error)]

let package = Package(
    name: "hookproxy",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "hookproxy", targets: ["Host"]),
        .library(name: "hookproxy-discord", type: .dynamic, targets: ["DiscordPlugin"]),
        .library(name: "hookproxy-slack", type: .dynamic, targets: ["SlackPlugin"]),
        .library(name: "hookproxy-generic", type: .dynamic, targets: ["GenericPlugin"]),
        .library(name: "hookproxy-github", type: .dynamic, targets: ["GitHubPlugin"]),
        // The Swift example of docs/plugins.md: built as libntfy.so, loaded only when copied into a plugins directory.
        .library(name: "ntfy", type: .dynamic, targets: ["NtfyExample"]),
        .library(name: "PluginKit", targets: ["PluginKit"]),
        // The benchmark program (docs/benchmarks.md): `scripts/benchmark` builds it in release mode and runs it.
        .executable(name: "hookproxy-bench", targets: ["Bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        .target(name: "PluginABI", path: "Sources/PluginABI", cSettings: [.unsafeFlags(["-Wall", "-Werror"])]),
        // The host's own C: starting worker processes, preparing them, recording which plugin call a crash was in.
        .target(name: "HostShims", path: "Sources/HostShims", cSettings: [.unsafeFlags(["-Wall", "-Werror"])]),
        .target(name: "PluginKit", dependencies: ["PluginABI"], path: "Sources/PluginKit", swiftSettings: strict),
        .executableTarget(
            name: "Host",
            dependencies: [
                "PluginABI",
                "PluginKit",
                "HostShims",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Sources/Host",
            swiftSettings: strict
        ),
        .target(
            name: "DiscordPlugin", dependencies: ["PluginKit"], path: "Plugins/Discord", swiftSettings: strict,
            linkerSettings: pluginLinkerSettings),
        .target(
            name: "SlackPlugin", dependencies: ["PluginKit"], path: "Plugins/Slack", swiftSettings: strict,
            linkerSettings: pluginLinkerSettings),
        .target(
            name: "GenericPlugin", dependencies: ["PluginKit"], path: "Plugins/Generic", swiftSettings: strict,
            linkerSettings: pluginLinkerSettings),
        .target(
            name: "GitHubPlugin", dependencies: ["PluginKit"], path: "Plugins/GitHub", swiftSettings: strict,
            linkerSettings: pluginLinkerSettings),
        .target(
            name: "NtfyExample", dependencies: ["PluginKit", "PluginABI"], path: "examples/plugins/ntfy", swiftSettings: strict,
            linkerSettings: pluginLinkerSettings),
        .executableTarget(
            name: "Bench",
            dependencies: [
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Bench",
            swiftSettings: strict
        ),
        .testTarget(
            name: "HostTests",
            dependencies: [
                "PluginKit",
                "TestSupport",
                "Host",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: strict),
        .testTarget(name: "PluginKitTests", dependencies: ["PluginKit", "TestSupport"], swiftSettings: strict),
        .target(name: "TestSupport", path: "Tests/TestSupport"),
    ]
)
