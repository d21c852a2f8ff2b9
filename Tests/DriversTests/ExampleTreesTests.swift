import Foundation
import Testing
import TestSupport

/// Every example tree under examples/ validates, plans with nothing blocked,
/// and the embedded default converges for real through scripts/quickstart,
/// the README's main-job command (run here with this build's binaries).
@Suite("Example trees and the quickstart", .serialized,
       .enabled(if: NetworkNamespace.isAvailable && PMXCFSProcess.unavailableReason == nil,
                Comment(rawValue: NetworkNamespace.unavailableReason ?? PMXCFSProcess.unavailableReason ?? "")))
struct ExampleTreesTests {
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path

    /// Folders of examples/ that hold a desired-state tree.
    static var trees: [String] {
        let examples = Corpus.packageRoot.appendingPathComponent("examples").path
        let names = (try? FileManager.default.contentsOfDirectory(atPath: examples)) ?? []
        return names.sorted().map { "\(examples)/\($0)" }.filter {
            FileManager.default.fileExists(atPath: $0 + "/storage.cfg") || FileManager.default.fileExists(atPath: $0 + "/nodes")
        }
    }

    @Test("the examples folder has trees")
    func treesFound() { #expect(!Self.trees.isEmpty, "no example tree under examples/") }

    @Test("every example tree validates and plans with nothing blocked", arguments: trees)
    func validatesAndPlans(_ tree: String) throws {
        let interfaces = tree + "/network/interfaces"
        let common = ["--root", tree, "--interfaces", interfaces, "--node", "pve1"]
        let validate = NetworkNamespace.capture([Self.binary, "validate"] + common)
        #expect(validate.status == 0, "\(validate.output)\(validate.error)")
        #expect(validate.error.contains("0 errors, 0 warnings"), "\(validate.error)")

        // The node's NICs are veth stand-ins in a fresh namespace.
        let namespace = try NetworkNamespace()
        let scratch = try TemporaryDirectory()
        let text = (try? String(contentsOfFile: interfaces, encoding: .utf8)) ?? ""
        let nics = Set(text.split(separator: "\n").compactMap { line -> String? in
            let words = line.split(separator: " ")
            return words.count >= 2 && words[0] == "iface" && words[1].hasPrefix("en") && !words[1].contains(".") ? String(words[1]) : nil
        })
        for nic in nics.sorted() { try namespace.addNIC(nic) }
        for folder in ["vz", "run"] {
            try FileManager.default.createDirectory(atPath: scratch.path + "/" + folder, withIntermediateDirectories: true)
        }
        let plan = namespace.execIsolated([Self.binary, "plan", "--detailed-exitcode", "--state-dir", scratch.path + "/state",
                                           "--qemu-accel", "tcg"] + common,
                                          binding: ["/var/lib/vz": scratch.path + "/vz", "/run": scratch.path + "/run"],
                                          environment: ["NO_COLOR": "1"])
        #expect(plan.status == 2, "a plan with changes to make: \(plan)")
        #expect(!plan.output.contains("(blocked)"), "\(plan.output)")
        #expect(!plan.error.contains("error:"), "\(plan.error)")
    }

    @Test("scripts/quickstart: pmxcfs, plan, apply, the example VM and container answer ping, converged, status, all torn down")
    func quickstart() throws {
        let root = Corpus.packageRoot.path
        let run = NetworkNamespace.capture([root + "/scripts/quickstart"],
                                           environment: ["PVECTL_BIN": Self.binary, "PMXCFS_BIN": PMXCFSProcess.binary, "NO_COLOR": "1"])
        #expect(run.status == 0, "\(run.output)\n\(run.error)")
        for expected in ["0 errors, 0 warnings", "Apply complete", "qemu/100: started", "VM 100 answers", "bytes from 192.0.2.100",
                         "lxc/200: started", "container 200 answers", "bytes from 192.0.2.53",
                         "Plan: 0 to create, 0 to change, 0 to replace, 0 to delete", "qemu/100                         Running",
                         "lxc/200                          Running", "stopped container 200",
                         "the host is as it was"] {
            #expect(run.output.contains(expected) || run.error.contains(expected), "missing '\(expected)':\n\(run.output)\n\(run.error)")
        }
        // Torn down: no namespace, mount or QEMU left behind.
        let namespaces = NetworkNamespace.capture(["ip", "netns", "list"]).output
        #expect(!namespaces.contains("pvqs-"), "\(namespaces)")
        let after = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        #expect(!after.contains("pvectl-quickstart"), "a mount is left behind")
        #expect(["/sys/fs/cgroup/memory/lxc/200", "/sys/fs/cgroup/lxc/200"].allSatisfy { !FileManager.default.fileExists(atPath: $0) },
                "the container's cgroup is left behind")
    }
}
