// swift-tools-version: 6.0
// libFuzzer targets for every parser. Built apart from the main package
// because they link libFuzzer's main instead of their own:
//   swift build --package-path fuzz -c release -Xswiftc -sanitize=fuzzer,address
// scripts/fuzz builds and runs them.
import PackageDescription

let formats = ["storage", "sectionconfig", "qemu", "lxc", "interfaces", "firewall", "corosync", "datacenter", "user", "volumeid",
               "firewallruleset", "netservices", "push"]

let package = Package(
    name: "pvectl-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "pvectl", path: "..")],
    targets: [
        .target(name: "FuzzSupport", dependencies: [.product(name: "Resources", package: "pvectl"), .product(name: "Reconciler", package: "pvectl")],
                path: "Sources/FuzzSupport"),
    ] + formats.map { format in
        // gold fails on libFuzzer's objects (internal error in format_file_lineno); lld links them.
        .executableTarget(name: "fuzz-\(format)", dependencies: ["FuzzSupport"], path: "Sources/\(format)",
                          linkerSettings: [.unsafeFlags(["-use-ld=lld"])])
    } + [
        // pmxcfs's replication messages: the only target that links the cluster file system (and its C libraries).
        .executableTarget(name: "fuzz-wire", dependencies: ["FuzzSupport", .product(name: "ClusterFS", package: "pvectl")],
                          path: "Sources/wire", linkerSettings: [.unsafeFlags(["-use-ld=lld"])]),
    ],
    swiftLanguageModes: [.v6]
)
