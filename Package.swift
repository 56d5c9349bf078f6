// swift-tools-version:6.0
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    // Release builds skip dynamic exclusivity checks (swift_beginAccess was ~3% of a cache hit
    // under perf); debug builds, which the tests run, keep them.
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "lacquer",
    products: [
        .executable(name: "lacquer", targets: ["lacquer"]),
        .executable(name: "fixture-origin", targets: ["fixture-origin"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/adam-fowler/compress-nio.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
    ],
    targets: [
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .target(name: "CCRC32C"),
        .target(name: "CSQLiteNoWait", dependencies: ["CSQLite"]),
        .target(
            name: "CachePolicy",
            dependencies: [.product(name: "NIOHTTP1", package: "swift-nio")],
            swiftSettings: strict
        ),
        .target(
            name: "CacheStore",
            dependencies: [
                "CachePolicy", "CSQLite", "CSQLiteNoWait", "CCRC32C",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .systemLibrary(name: "CPCRE2", pkgConfig: "libpcre2-8", providers: [.apt(["libpcre2-dev"])]),
        .target(name: "VCL", dependencies: ["CachePolicy", "CPCRE2"], swiftSettings: strict),
        .target(
            name: "LacquerServer",
            dependencies: [
                "CachePolicy", "CacheStore", "VCL", "CSQLiteNoWait",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "lacquer",
            dependencies: [
                "LacquerServer", "VCL",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The fixture origin depends on NIO only, never on Lacquer modules.
        .target(
            name: "FixtureOrigin",
            dependencies: [
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "fixtures/FixtureOrigin",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "fixture-origin",
            dependencies: ["FixtureOrigin", .product(name: "NIOPosix", package: "swift-nio")],
            path: "fixtures/fixture-origin",
            swiftSettings: strict
        ),
        .target(
            name: "LacquerTesting",
            dependencies: [
                "LacquerServer", "FixtureOrigin", "VCL",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "CachePolicyTests", dependencies: ["CachePolicy", "LacquerTesting"], swiftSettings: strict),
        .testTarget(name: "CacheStoreTests", dependencies: ["CacheStore", "CSQLiteNoWait", "LacquerTesting"], swiftSettings: strict),
        .testTarget(name: "VCLTests", dependencies: ["VCL", "LacquerTesting"], swiftSettings: strict),
        .testTarget(
            name: "LacquerServerTests",
            dependencies: [
                "LacquerServer", "LacquerTesting", "FixtureOrigin", "CacheStore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ],
            swiftSettings: strict
        ),
    ]
)

// Microbenchmarks of the hit path's pieces: not part of the default build, so `swift test` never
// compiles them (Hummingbird gates its benchmarks the same way). Build and run them with
//   LACQUER_BENCHMARKS=1 swift run -c release lacquer-microbench
if Context.environment["LACQUER_BENCHMARKS"] != nil {
    package.targets.append(
        .executableTarget(
            name: "lacquer-microbench",
            dependencies: [
                "LacquerServer", "VCL", "CachePolicy", "CacheStore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Benchmarks/Microbenchmarks",
            swiftSettings: strict
        ))
}
