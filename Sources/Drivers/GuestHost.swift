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

    /// Limits a guest NIC's host end to `rate` MB/s, as Proxmox does for a NIC's `rate=`: an htb class on its egress
    /// (traffic to the guest) and, where the kernel can police (`ingress`), a policer on its ingress (traffic from the
    /// guest). nil removes both.
    public static func setRate(device: String, rate: Double?, ingress: Bool) async throws {
        // Whatever was there goes first (absent ones make tc fail, which is fine).
        _ = try? await Command.run(["tc", "qdisc", "del", "dev", device, "root"])
        _ = try? await Command.run(["tc", "qdisc", "del", "dev", device, "ingress"])
        guard let rate else { return }
        let bytes = Int(rate * 1024 * 1024)
        let burst = 1024 * 1024
        try await Command.check(["tc", "qdisc", "add", "dev", device, "root", "handle", "1:", "htb", "default", "1"])
        try await Command.check(["tc", "class", "add", "dev", device, "parent", "1:", "classid", "1:1", "htb", "rate", "\(bytes)bps",
                                 "burst", "\(burst)b"])
        guard ingress else { return }
        try await Command.check(["tc", "qdisc", "add", "dev", device, "handle", "ffff:", "ingress"])
        try await Command.check(["tc", "filter", "add", "dev", device, "parent", "ffff:", "protocol", "all", "prio", "50", "u32", "match",
                                 "u32", "0", "0", "police", "rate", "\(bytes)bps", "burst", "\(burst)b", "drop", "flowid", ":1"])
    }

    /// The bridge a device is enslaved to ("" for none), nil when the device does not exist.
    public static func master(of device: String) -> String? {
        guard FileManager.default.fileExists(atPath: "/sys/class/net/\(device)") else { return nil }
        let link = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/sys/class/net/\(device)/master")) ?? ""
        return (link as NSString).lastPathComponent
    }
}
