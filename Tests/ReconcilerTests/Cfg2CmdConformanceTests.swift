import Foundation
@testable import Reconciler
import Resources
import Testing
import TestSupport

/// qemu-server's cfg2cmd corpus: each VM config's command line compared with
/// upstream's expected one (as `qm showcmd --pretty`, one option per line,
/// whitespace and line continuations folded), every EXPECT_ERROR case must
/// fail with that text. The pass count is printed; a floor keeps it from
/// falling back.
@Suite("QEMU command line conformance (qemu-server cfg2cmd)", .needsConformance)
struct Cfg2CmdConformanceTests {
    static let directory = "qemu-server/src/test/cfg2cmd"
    /// Cases passing when this floor was last raised; a change that loses one fails.
    static let floor = 105

    struct Case {
        var name: String
        var config: String
        var expected: String?
        var headers: [String: String]
    }

    static func cases() throws -> [Case] {
        let root = Corpus.conformance.appendingPathComponent(directory)
        var result: [Case] = []
        for sub in ["", "aarch64/"] {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent(sub).path)) ?? []
            for name in names.sorted() where name.hasSuffix(".conf") {
                let text = try String(contentsOf: root.appendingPathComponent(sub + name), encoding: .utf8)
                let expected = try? String(contentsOf: root.appendingPathComponent(sub + name + ".cmd"), encoding: .utf8)
                var headers: [String: String] = [:]
                for line in text.split(separator: "\n") where line.hasPrefix("#") {
                    let body = line.dropFirst().trimmingCharacters(in: .whitespaces)
                    guard !body.hasPrefix("#"), let colon = body.firstIndex(of: ":") else { continue }
                    headers[String(body[..<colon])] = body[body.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                }
                result.append(Case(name: sub + name, config: text, expected: expected, headers: headers))
            }
        }
        return result
    }

    static func normalize(_ text: String) -> [String] {
        text.components(separatedBy: "\n").map { line in
            var trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasSuffix("\\") { trimmed = String(trimmed.dropLast()).trimmingCharacters(in: .whitespaces) }
            return trimmed
        }.filter { !$0.isEmpty }
    }

    /// Snapshot chains upstream's runner mocks per storage, for the volume the corpus uses there.
    static let snapshotMock: [String: [String: (file: String, parent: String?)]] = {
        guard let data = try? Corpus.data("qemu-server/_derived/cfg2cmd-mock-env.json"),
              let env = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let info = env["volume_snapshot_info"] as? [String: Any] else { return [:] }
        var chains: [String: [String: (file: String, parent: String?)]] = [:]
        let volumes = ["localsnapext": "localsnapext:8006/vm-8006-disk-0.qcow2", "lvm-store": "lvm-store:vm-8006-disk-0.qcow2"]
        for (storage, volume) in volumes {
            guard let snapshots = info[storage] as? [String: [String: String]] else { continue }
            chains[volume] = snapshots.mapValues { (file: $0["file"] ?? "", parent: $0["parent"]) }
        }
        return chains
    }()

    /// The PCI devices and mappings upstream's runner mocks (cfg2cmd-mock-env.json).
    static let pciMock: (devices: [String], mappings: [String: (paths: [String], mdev: Bool)]) = {
        guard let data = try? Corpus.data("qemu-server/_derived/cfg2cmd-mock-env.json"),
              let env = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return ([], [:]) }
        let devices = env["pci_devs"] as? [String] ?? []
        var mappings: [String: (paths: [String], mdev: Bool)] = [:]
        for (name, value) in (env["pci_map_config"] as? [String: Any])?["ids"] as? [String: [String: Any]] ?? [:] {
            let paths = (value["map"] as? [String] ?? []).compactMap { PropertyString(parsing: $0)["path"] }
            mappings[name] = (paths, (value["mdev"] as? Int ?? 0) == 1)
        }
        return (devices, mappings)
    }()

    static func profile(_ headers: [String: String]) -> QemuHostProfile {
        var profile = QemuHostProfile.pve11(arch: headers["HOST_ARCH"] ?? "x86_64")
        profile.pciDevices = pciMock.devices
        profile.pciMappings = pciMock.mappings
        profile.snapshotChains = snapshotMock
        if let version = headers["QEMU_VERSION"].flatMap(QemuVersion.init) { profile.qemuVersion = version }
        if let vendor = headers["HOST_CPU_VENDOR"] { profile.cpuVendor = vendor }
        if headers["HW_CAPABILITIES"]?.lowercased() == "amd-turin-9005" { profile.sev = (51, 6, true, true) }
        return profile
    }

    @Test("cfg2cmd corpus")
    func corpus() throws {
        let storageText = try Corpus.text("qemu-server/_derived/storage.cfg")
        let storage = SectionConfigFile.parse(storageText, file: "storage.cfg") { Specs.storage.sectionLayout(forType: $0) }.0
        let modelsText = try Corpus.text("qemu-server/_derived/cpu-models.conf")
        let cpuModels = SectionConfigFile.parse(modelsText, file: "cpu-models.conf") { _ in
            SectionTypeLayout(known: ["reported-model", "flags", "hv-vendor-id", "phys-bits", "guest-phys-bits", "hidden"])
        }.0
        var passed = 0, commandsPassed = 0, commands = 0, errorsPassed = 0, errors = 0
        var failures: [String] = []
        let all = try Self.cases()
        for entry in all {
            let config = GuestConfig.parse(entry.config, file: "qemu-server/8006.conf", kind: .qemu).0
            let generator = QemuCommandLine(vmid: 8006, config: config, storage: storage, host: Self.profile(entry.headers), cpuModels: cpuModels)
            if entry.headers["EXPECT_ERROR"] != nil { errors += 1 } else { commands += 1 }
            do {
                let (arguments, warnings) = try generator.build()
                let expectedWarning = entry.headers["EXPECT_WARN"] ?? entry.headers["EXPECT_WARNING"]
                let warningsMatch = expectedWarning.map { warnings == [$0] } ?? warnings.isEmpty
                let actual = QemuCommandLine.render(arguments, pretty: true)
                if ProcessInfo.processInfo.environment["CFG2CMD_CASE"] == entry.name {
                    try? actual.write(toFile: "/tmp/cfg2cmd-actual.txt", atomically: true, encoding: .utf8)
                }
                if let expected = entry.expected, Self.normalize(actual) == Self.normalize(expected), entry.headers["EXPECT_ERROR"] == nil,
                   warningsMatch {
                    passed += 1
                    commandsPassed += 1
                } else if !warningsMatch {
                    failures.append("\(entry.name): warnings \(warnings), expected \(expectedWarning ?? "none")")
                } else if let expected = entry.expected {
                    let want = Self.normalize(expected), got = Self.normalize(actual)
                    let first = zip(want, got).first { $0 != $1 }.map { "want \($0.0)\n      got  \($0.1)" }
                        ?? "want \(want.count) lines, got \(got.count)"
                    failures.append("\(entry.name): \(first)")
                } else {
                    failures.append("\(entry.name): expected error '\(entry.headers["EXPECT_ERROR"] ?? "?")', got a command line")
                }
            } catch {
                if let message = entry.headers["EXPECT_ERROR"], "\(error)" == message {
                    passed += 1
                    errorsPassed += 1
                } else {
                    failures.append("\(entry.name): \(error)")
                }
            }
        }
        Corpus.report("qemu-server cfg2cmd command lines", passed: commandsPassed, total: commands)
        Corpus.report("qemu-server cfg2cmd expected errors", passed: errorsPassed, total: errors)
        if ProcessInfo.processInfo.environment["CFG2CMD_VERBOSE"] != nil { for failure in failures { print("  " + failure) } }
        #expect(passed >= Self.floor, "fewer cfg2cmd cases pass than before (\(passed) < \(Self.floor))")
    }
}
