import Foundation

/// The facts about the node a QEMU command line depends on: the QEMU
/// version, the architecture, the CPU vendor, what the kernel offers (KVM,
/// vhost-net), and the few host files the command names. `pve11` is the
/// reference host of upstream's cfg2cmd tests; `installed` reads this machine.
public struct QemuHostProfile: Sendable {
    public var qemuVersion: QemuVersion
    public var arch: String
    public var cpuVendor: String
    public var nodeName: String
    public var iscsiInitiator: String?
    public var kvmAvailable: Bool
    public var vhostNet: Bool
    public var cpuCount: Int
    /// MTU of each bridge; bridges not listed have 1500.
    public var bridgeMTU: [String: Int]
    /// Why this node has no QEMU to start VMs with ("qemu-system-x86_64 is not
    /// installed (Debian package qemu-system-x86)"); nil when it has one.
    public var missingQEMU: String?
    /// The binary for an architecture (`/usr/bin/kvm` on the native one).
    public var binary: @Sendable (String) -> String
    /// Host PCI devices (`0000:01:00.0`), for passthrough of all functions of a slot.
    public var pciDevices: [String] = []
    /// Cluster-wide PCI mappings (`mapping=`): name → device paths on this node, and whether it is a mediated device.
    public var pciMappings: [String: (paths: [String], mdev: Bool)] = [:]
    /// External snapshot chains of volumes on storages with `snapshot-as-volume-chain`:
    /// volume ID → snapshot name (`current` is the live image) → its file and parent snapshot.
    public var snapshotChains: [String: [String: (file: String, parent: String?)]] = [:]
    /// The boot menu's splash image; nil where qemu-server's file is not installed.
    public var bootSplash: String? = "/usr/share/qemu-server/bootsplash.jpg"
    /// Whether taps are bridged by qemu-server's pve-bridge script; without
    /// it QEMU creates them with `script=no` and the QEMU kind enslaves them.
    public var bridgeScripts = true
    /// Where the `-readconfig` machine layouts are (qemu-server ships them in
    /// /usr/share/qemu-server; elsewhere the QEMU driver writes its own).
    public var machineConfigDirectory = "/usr/share/qemu-server"
    /// Proxmox VE's patched QEMU knows `+pveN` machine versions; stock QEMU does not.
    public var proxmoxQEMU = true
    /// AMD SEV facts of the host CPU (query-sev-capabilities), nil without SEV.
    public var sev: (cbitpos: Int, reducedPhysBits: Int, es: Bool, snp: Bool)?
    /// Whether a path (a `serialN: /dev/...` device) is a character device on this host. The installed profile asks
    /// the host; the Reconciler itself looks at no file. Upstream's test profile has none.
    public var isCharacterDevice: @Sendable (String) -> Bool = { _ in false }

    public init(qemuVersion: QemuVersion, arch: String = "x86_64", cpuVendor: String = "GenuineIntel", nodeName: String,
                iscsiInitiator: String?, kvmAvailable: Bool, vhostNet: Bool, cpuCount: Int, bridgeMTU: [String: Int] = [:],
                binary: @escaping @Sendable (String) -> String) {
        self.qemuVersion = qemuVersion
        self.arch = arch
        self.cpuVendor = cpuVendor
        self.nodeName = nodeName
        self.iscsiInitiator = iscsiInitiator
        self.kvmAvailable = kvmAvailable
        self.vhostNet = vhostNet
        self.cpuCount = cpuCount
        self.bridgeMTU = bridgeMTU
        self.binary = binary
    }

    /// Proxmox VE 9/QEMU 11.0 as upstream's command-line tests assume it
    /// (`../shared/conformance/README.txt`, 1a).
    public static func pve11(arch: String = "x86_64") -> QemuHostProfile {
        QemuHostProfile(qemuVersion: QemuVersion(11, 0, 0), arch: arch, nodeName: "localhost",
                        iscsiInitiator: "iqn.1993-08.org.debian:01:aabbccddeeff", kvmAvailable: true, vhostNet: true, cpuCount: 64,
                        bridgeMTU: ["vxlan_bridge": 1450]) { target in
            target == arch ? "/usr/bin/kvm" : "/usr/bin/qemu-system-\(target)"
        }
    }
}

/// `major.minor.micro` of a QEMU binary or machine type.
public struct QemuVersion: Sendable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int
    public var micro: Int

    public init(_ major: Int, _ minor: Int, _ micro: Int = 0) {
        self.major = major
        self.minor = minor
        self.micro = micro
    }

    public init?(_ text: String) {
        let parts = text.split(separator: ".").map { Int($0) }
        guard parts.count >= 2, let major = parts[0], let minor = parts[1] else { return nil }
        self.init(major, minor, parts.count > 2 ? parts[2] ?? 0 : 0)
    }

    public static func < (lhs: QemuVersion, rhs: QemuVersion) -> Bool {
        (lhs.major, lhs.minor, lhs.micro) < (rhs.major, rhs.minor, rhs.micro)
    }

    public var description: String { "\(major).\(minor).\(micro)" }
}

/// JSON the way Perl's `to_json(..., {canonical => 1})` writes it: keys
/// sorted, no whitespace, so -blockdev and -object arguments are byte-stable.
indirect enum CanonicalJSON: Sendable {
    case string(String)
    case number(Int)
    case bool(Bool)
    case array([CanonicalJSON])
    case object([String: CanonicalJSON])

    var text: String {
        switch self {
        case .string(let value): return Self.quote(value)
        case .number(let value): return String(value)
        case .bool(let value): return value ? "true" : "false"
        case .array(let values): return "[" + values.map(\.text).joined(separator: ",") + "]"
        case .object(let members):
            return "{" + members.keys.sorted().map { Self.quote($0) + ":" + members[$0]!.text }.joined(separator: ",") + "}"
        }
    }

    static func quote(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 { out += String(format: "\\u%04x", scalar.value) } else { out.unicodeScalars.append(scalar) }
            }
        }
        return out + "\""
    }
}
