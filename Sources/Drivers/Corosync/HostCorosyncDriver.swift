import Foundation
import Reconciler

/// corosync on this host: the file it reads, the version it runs (`corosync-cmapctl`), the node's addresses, and a
/// cluster-wide reload (`corosync-cfgtool -R`).
public struct HostCorosyncDriver: CorosyncDriver {
    public let installedPath: String

    public init(installedPath: String = "/etc/corosync/corosync.conf") {
        self.installedPath = installedPath
    }

    public func observe() async -> CorosyncObservation {
        let installed = try? String(contentsOfFile: installedPath, encoding: .utf8)
        var addresses: Set<String> = []
        if let json = try? await Command.check(["ip", "-json", "address", "show"]),
           let links = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]] {
            for link in links {
                for info in link["addr_info"] as? [[String: Any]] ?? [] { if let local = info["local"] as? String { addresses.insert(local) } }
            }
        }
        guard Command.locate("corosync-cfgtool") != nil, Command.locate("corosync-cmapctl") != nil else {
            return CorosyncObservation(installed: installed, runningVersion: nil, localAddresses: addresses,
                                       missing: MissingExecutable(name: "corosync-cfgtool").description)
        }
        // "totem.config_version (u64) = 3"; nothing when corosync does not run.
        var running: UInt64?
        if let result = try? await Command.run(["corosync-cmapctl", "-g", "totem.config_version"]), result.succeeded {
            running = result.output.split(separator: "=").last.flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        return CorosyncObservation(installed: installed, runningVersion: running, localAddresses: addresses)
    }

    public func install(_ text: String) async throws {
        let directory = (installedPath as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try PushTarget(root: "/").writeAtomically(Data(text.utf8), to: installedPath, mode: 0o644)
    }

    public func reload() async throws {
        try await Command.check(["corosync-cfgtool", "-R"])
    }
}
