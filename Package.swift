// swift-tools-version: 6.0
import PackageDescription

/// Every target gets the same strictness: Swift 6 language mode (strict
/// concurrency) and warnings treated as errors, so "no warnings" is enforced
/// by the build rather than by review.
let strict: [SwiftSetting] = [
    .unsafeFlags(["-warnings-as-errors"]),
]

let package = Package(
    name: "pvectl",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "pvectl", targets: ["pvectl"]),
        .executable(name: "pmxcfs", targets: ["pmxcfs"]),
        .library(name: "Resources", targets: ["Resources"]),
        // For the fuzz package's firewall compiler target.
        .library(name: "Reconciler", targets: ["Reconciler"]),
        // For the fuzz package's replication-message target.
        .library(name: "ClusterFS", targets: ["ClusterFS"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
    ],
    targets: [
        .target(
            name: "Resources",
            dependencies: [.product(name: "Yams", package: "Yams")],
            swiftSettings: strict
        ),
        .target(
            name: "Reconciler",
            dependencies: ["Resources", .product(name: "Crypto", package: "swift-crypto"), .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .target(
            name: "Drivers",
            dependencies: ["Reconciler", "Resources", "ClusterFS", .product(name: "Subprocess", package: "swift-subprocess")],
            swiftSettings: strict
        ),
        // Thin system-library targets: module maps only, no logic in C.
        .systemLibrary(name: "CFuse3", providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CQB", providers: [.apt(["libqb-dev"])]),
        .systemLibrary(name: "CCorosync", providers: [.apt(["libcpg-dev", "libquorum-dev", "libcmap-dev"])]),
        .target(
            name: "ClusterFS",
            dependencies: ["Resources", "CFuse3", "CSQLite", "CQB", "CCorosync", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "pmxcfs",
            dependencies: ["ClusterFS", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "pvectl",
            dependencies: [
                "Resources", "Reconciler", "Drivers", "ClusterFS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // Shared by the test targets: locating ../shared, network namespaces.
        .target(name: "TestSupport", dependencies: ["Drivers"], path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(name: "ResourcesTests", dependencies: ["Resources", "Drivers", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "ReconcilerTests",
                    dependencies: ["Reconciler", "Resources", "TestSupport", .product(name: "Logging", package: "swift-log")],
                    exclude: ["Golden"], swiftSettings: strict),
        .testTarget(name: "DriversTests", dependencies: ["Drivers", "Reconciler", "Resources", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "ClusterFSTests", dependencies: ["ClusterFS", "TestSupport"], swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
