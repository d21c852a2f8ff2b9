import Foundation
import Reconciler

/// What VMs and containers do alike on the host: their config files written back, their NICs put on bridges.
public enum GuestHost {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Replaces a guest config by a rename, as Proxmox does on pmxcfs; refused when the file no longer has
    /// `expectedDigest` (someone edited it since it was read).
    public static func replaceConfig(path: String, text: String, expectedDigest: String?) throws {
        if let expectedDigest, let current = FileManager.default.contents(atPath: path), Digest.sha256Hex(current) != expectedDigest {
            throw Failure(description: "\(path) changed since it was read; run pvectl apply again")
        }
        let temporary = path + ".tmp.\(getpid())"
        try Data(text.utf8).write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: temporary)
            throw Failure(description: "cannot replace \(path): \(reason)")
        }
    }

    /// Puts a guest's host-side device (a tap or a veth end) on its bridge with the bridge's MTU, and on its VLAN.
    public static func attach(device: String, bridge: String, tag: Int?) async throws {
        guard FileManager.default.fileExists(atPath: "/sys/class/net/\(bridge)/bridge") else {
            throw Failure(description: "bridge \(bridge) of \(device) does not exist")
        }
        var batch = "link set dev \(device) nomaster\n"
        if let mtu = (try? String(contentsOfFile: "/sys/class/net/\(bridge)/mtu", encoding: .utf8))
            .flatMap({ Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) {
            batch += "link set dev \(device) mtu \(mtu)\n"
        }
        batch += "link set dev \(device) master \(bridge) up\n"
        try await Command.check(["ip", "-batch", "-"], input: batch)
        if let tag {
            let filtering = (try? String(contentsOfFile: "/sys/class/net/\(bridge)/bridge/vlan_filtering", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) == "1"
            guard filtering else {
                throw Failure(description: "\(device): tag=\(tag) needs a VLAN-aware bridge; \(bridge) has bridge-vlan-aware off")
            }
            try await Command.check(["bridge", "-batch", "-"],
                                    input: "vlan del dev \(device) vid 1\nvlan add dev \(device) vid \(tag) pvid untagged\n")
        }
    }

    /// The bridge a device is enslaved to ("" for none), nil when the device does not exist.
    public static func master(of device: String) -> String? {
        guard FileManager.default.fileExists(atPath: "/sys/class/net/\(device)") else { return nil }
        let link = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/sys/class/net/\(device)/master")) ?? ""
        return (link as NSString).lastPathComponent
    }
}
