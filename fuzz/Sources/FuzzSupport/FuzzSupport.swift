import Foundation
import Reconciler
import Resources

/// What every parser must do with any input: never trap, never hang, write an
/// unedited file back byte-identical, and produce a canonical form (or
/// diagnostics) without crashing. A broken invariant traps on purpose so
/// libFuzzer records the input.
public enum FuzzSupport {
    public static func run(_ format: ConfigFormat, _ data: UnsafePointer<UInt8>, _ size: Int) {
        let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
        let file = format == .lxc ? "lxc/100.conf" : format == .qemu ? "qemu-server/100.conf" : "fuzz"
        _ = format.validate(text, file: file)
        _ = format.canonicalize(text, file: file)
        _ = format.canonicalize(text, file: file, dropInvalid: true)
        precondition(format.losslessRoundTrip(text, file: file) == text, "lossless round trip changed the input")
        if format == .lxc { runContainer(text, file: file) }
        // corosync-quorumtool's output, which `pvectl cluster` reads, beside corosync.conf.
        if format == .corosync { _ = QuorumStatus.parse(text) }
        if format == .qemu {
            // Any VM config either gives a command line or a clear error, never a trap.
            let config = GuestConfig.parse(text, file: file, kind: .qemu).0
            let storage = SectionConfigFile.parse("dir: local\n\tpath /var/lib/vz\n\tcontent images,iso\n", file: "storage.cfg") { _ in
                SectionTypeLayout(known: ["path", "content"])
            }.0
            if let (arguments, _) = try? QemuCommandLine(vmid: 100, config: config, storage: storage, host: .pve11()).build() {
                precondition(!arguments.isEmpty, "an empty command line")
                _ = QemuCommandLine.render(arguments, pretty: true)
                // The QEMU kind on the same config: its effective values, the values
                // it would generate and write back, and how each key would change
                // from a VM running nothing to this config.
                let effective = QemuReconciler.effectiveConfig(config)
                let generated = QemuReconciler.generatedValues(vmid: 100, config: effective, seed: "fuzz", macPrefix: "BC:24:11")
                precondition(generated == QemuReconciler.generatedValues(vmid: 100, config: effective, seed: "fuzz", macPrefix: "BC:24:11"),
                             "generated values are not deterministic")
                let parsed = QemuArguments(arguments)
                for key in effective.keys {
                    _ = QemuLiveChanges.change(vmid: 100, key: key, running: [:], desired: effective, arguments: parsed, present: [])
                }
                _ = QemuReconciler.rewritten(config, values: generated, removing: [], fromPending: Set(config.pending?.entries.map(\.key) ?? []))
            }
        }
    }
}

/// libFuzzer's entry for programs that keep their own main.
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

// Set once before the driver starts; the C callback cannot capture it.
nonisolated(unsafe) private var fuzzedFormat: ConfigFormat = .storage
nonisolated(unsafe) private var fuzzedFunction: (UnsafePointer<UInt8>, Int) -> Void = { _, _ in }

extension FuzzSupport {
    /// /etc/services and /etc/protocols text (the same input read as both), and a qcow2 header from its first bytes:
    /// never trap; every parsed entry answers its own lookups.
    public static func runNetworkServices(_ data: UnsafePointer<UInt8>, _ size: Int) {
        let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
        let table = NetworkServices(services: text, protocols: text)
        for service in table.services {
            precondition((0...65535).contains(service.port), "port out of range")
            precondition(table.port(named: service.names[0], proto: service.proto) != nil, "an entry does not answer its own name")
        }
        for (name, number) in table.protocols { precondition(table.protocolNumber(named: name) == number && (0...255).contains(number)) }
        _ = StorageVolumes.QCOW2Header(Array(UnsafeBufferPointer(start: data, count: min(size, 64))))
    }

    /// Volume IDs, volume names (every storage type's rules), backup archive
    /// names and disk naming: never trap; a parsed volume ID reassembles to its input.
    public static func runVolumeID(_ data: UnsafePointer<UInt8>, _ size: Int) {
        let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
        if let (storage, volname) = StorageVolumes.parseVolumeID(text) {
            precondition(storage + ":" + volname == text, "volume ID did not reassemble")
        }
        for type in ["dir", "lvm", "lvmthin", "zfspool", "rbd", "btrfs"] {
            if let volume = try? StorageVolumes.parseVolname(text, storageType: type), type == "dir" {
                _ = try? StorageVolumes.filesystemPath(path: "/var/lib/vz", volname: text)
                _ = StorageVolumes.nextDiskName(existing: [volume.name], vmid: Int(volume.vmid ?? "") ?? 100, format: volume.format,
                                                addFormatSuffix: true, allowsSubvol: false)
            }
        }
        _ = try? StorageVolumes.archiveInfo(text, timeZone: TimeZone(identifier: "UTC")!)
        _ = StorageVolumes.parseContentDirectories(text)
    }

    /// This machine's service and protocol names, read once (rules may name them).
    static let services = NetworkServices(services: try? String(contentsOfFile: NetworkServices.servicesPath, encoding: .utf8),
                                          protocols: try? String(contentsOfFile: NetworkServices.protocolsPath, encoding: .utf8))

    /// The firewall compiler on any cluster.fw / host.fw / guest .fw (the input
    /// split at lines of `%%`): never traps, and what it emits is closed:
    /// every chain a rule jumps to and every set it names is declared.
    public static func runFirewallRuleset(_ data: UnsafePointer<UInt8>, _ size: Int) {
        let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
        let parts = text.components(separatedBy: "\n%%\n")
        func file(_ index: Int, _ path: String) -> FirewallConfig? {
            index < parts.count ? FirewallConfig.parse(parts[index], file: path).0 : nil
        }
        let guest = GuestConfig.parse("net0: virtio=02:00:00:00:00:01,bridge=vmbr0,firewall=1\nnet1: virtio=02:00:00:00:00:02,bridge=vmbr1,firewall=1\nipconfig0: ip=192.0.2.5/24\n",
                                      file: "100.conf", kind: .qemu).0
        let compiled = FirewallCompiler.compile(FirewallCompiler.Input(
            node: "pve1", cluster: file(0, "cluster.fw"), host: file(1, "host.fw"), guestFirewalls: file(2, "100.fw").map { [100: $0] } ?? [:],
            guests: [DesiredState.Guest(vmid: 100, node: "pve1", config: guest, path: "100.conf")], corosync: nil, interfaces: nil,
            hostAddresses: ["192.0.2.1/24"], services: services))
        let script = compiled.script()
        let chains = Set(compiled.chains.map { "\($0.table)/\($0.name)" })
        let sets = Set(compiled.sets.map { $0.name })
        for rule in compiled.rules {
            precondition(!rule.text.contains("\n"), "a rule spans lines: \(rule.text)")
            let table = rule.chain.split(separator: "/").first.map(String.init) ?? ""
            // Quoted text (log prefixes) is data, not a chain or set reference.
            let unquoted = rule.text.split(separator: "\"", omittingEmptySubsequences: false).enumerated()
                .filter { $0.offset % 2 == 0 }.map(\.element).joined(separator: " ")
            let words = unquoted.split(separator: " ")
            for (index, word) in words.enumerated() where (word == "jump" || word == "goto") && index + 1 < words.count {
                let target = words[index + 1].trimmingCharacters(in: CharacterSet(charactersIn: ",}"))
                precondition(chains.contains("\(table)/\(target)"), "jump to undeclared chain \(target)")
            }
            for word in words where word.hasPrefix("@") {
                precondition(sets.contains(String(word.dropFirst())), "undeclared set \(word)")
            }
        }
        precondition(compiled.enabled || !script.contains("chain "), "a disabled firewall must compile to removal only")
    }

    /// Runs libFuzzer on a function of the input bytes.
    public static func main(_ function: @escaping (UnsafePointer<UInt8>, Int) -> Void) -> Never {
        fuzzedFunction = function
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        let status = LLVMFuzzerRunDriver(&argc, &argv) { data, size in
            let empty: [UInt8] = [0]
            if let data {
                fuzzedFunction(data, size)
            } else {
                empty.withUnsafeBufferPointer { fuzzedFunction($0.baseAddress!, 0) }
            }
            return 0
        }
        exit(status)
    }
}

extension FuzzSupport {
    /// Runs libFuzzer on one format with this process's arguments.
    public static func main(_ format: ConfigFormat) -> Never {
        fuzzedFormat = format
        main { data, size in FuzzSupport.run(fuzzedFormat, data, size) }
    }
}

extension FuzzSupport {
    /// A container config: its LXC config for both cgroup layouts (deterministic, or a clear refusal), and the guest
    /// setup on a Debian root file system whose interfaces and hosts files are the same input.
    static func runContainer(_ text: String, file: String) {
        let config = GuestConfig.parse(text, file: file, kind: .lxc).0.main
        for layout in [LxcHostFacts.CgroupLayout.v1, .v2] {
            let host = LxcHostFacts(shippedConfigs: ["common.conf", "userns.conf", "debian.common.conf"], cgroupLayout: layout,
                                    bridgeMTUs: ["vmbr0": 1500], cpus: [0, 1])
            let first = try? LxcConfig.generate(vmid: 100, config: config, host: host)
            precondition(first == (try? LxcConfig.generate(vmid: 100, config: config, host: host)), "LXC config generation is not deterministic")
        }
        let files = MemoryContainerFiles(["/etc/debian_version": "12.5\n", "/etc/network/interfaces": text, "/etc/hosts": text,
                                          "/etc/resolv.conf": text, "/etc/inittab": text, "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\n"],
                                         directories: ["/", "/etc", "/etc/network", "/root"])
        guard let setup = try? LxcGuestSetup(config: config, files: files) else { return }
        var environment = LxcGuestSetup.Environment(sshKeys: "ssh-ed25519 AAAA fuzz", nameservers: ["192.0.2.53"], searchDomains: ["example.com"],
                                                    makeUUID: { "00000000-0000-0000-0000-000000000000" }, days: 20000)
        try? setup.postCreate(&environment)
        try? setup.preStart(environment)
    }
}

/// A root file system in memory for the setup fuzzer: regular files and directories, no links.
final class MemoryContainerFiles: ContainerFiles {
    var files: [String: String]
    var directories: Set<String>

    init(_ files: [String: String], directories: Set<String>) {
        self.files = files
        self.directories = directories
    }

    func contents(_ path: String) -> String? { files[path] }
    func isRegularFile(_ path: String) -> Bool { files[path] != nil }
    func isDirectory(_ path: String) -> Bool { directories.contains(path) }
    func isExecutable(_ path: String) -> Bool { false }
    func isSymbolicLink(_ path: String) -> Bool { false }
    func linkTarget(_ path: String) -> String? { nil }
    func exists(_ path: String) -> Bool { files[path] != nil || directories.contains(path) }
    func entries(_ path: String) -> [String] {
        let prefix = path.hasSuffix("/") ? path : path + "/"
        let below = (Array(files.keys) + Array(directories)).filter { $0.hasPrefix(prefix) }
        return Set(below.map { String($0.dropFirst(prefix.count).split(separator: "/").first ?? "") }).filter { !$0.isEmpty }.sorted()
    }
    func prefix(_ path: String, count: Int) -> [UInt8]? { files[path].map { Array($0.utf8.prefix(count)) } }
    func write(_ path: String, _ text: String, mode: Int) throws { files[path] = text }
    func makeDirectory(_ path: String, mode: Int) throws {
        var current = ""
        for component in path.split(separator: "/") {
            current += "/" + component
            directories.insert(current)
        }
    }
    func remove(_ path: String) throws { files[path] = nil }
    func symlink(_ path: String, to target: String) throws {}
}

extension FuzzSupport {
    /// A push's merge of a repository's guest config into /etc/pve's (the input split at a `%%` line, for both kinds):
    /// never traps, and pushing the merged result again writes nothing (no perpetual diff). The record reader and the
    /// diff take the same bytes: the reader refuses or reads, the diff is empty exactly when the lines are equal.
    public static func runPush(_ data: UnsafePointer<UInt8>, _ size: Int) {
        let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
        let parts = text.components(separatedBy: "\n%%\n")
        let repository = parts[0]
        let currentText = parts.count > 1 ? parts[1] : ""
        for kind in GuestConfig.Kind.allCases {
            let merge = GuestConfigMerge(kind: kind)
            let current = GuestConfig.parse(currentText, file: "100.conf", kind: kind).0
            let first = merge.merge(repository: repository, file: "100.conf", current: current, lastPushed: [:])
            let merged = GuestConfig.parse(first.text, file: "100.conf", kind: kind).0
            let second = merge.merge(repository: repository, file: "100.conf", current: merged, lastPushed: first.repositorySystemValues)
            precondition(second.text == first.text, "pushing the merged config again would change it")
            // Lines by "\n" byte, as the parser and the merge count them ("\r\n" is one Character to Swift).
            precondition(first.sourceLines.isEmpty || first.sourceLines.count == splitLines(first.text).count
                         - (first.text.utf8.last == UInt8(ascii: "\n") ? 1 : 0), "the line map does not cover the merged file")
            _ = merge.managedPart(of: merged)
        }
        _ = try? PushRecord.decode(header: Data(repository.utf8), file: "push.json") { _ in Data(currentText.utf8) }
        let diff = UnifiedDiff.render(old: repository, new: currentText, oldName: "a", newName: "b")
        precondition(diff.isEmpty == (UnifiedDiff.lines(repository) == UnifiedDiff.lines(currentText)), "diff and equality disagree")
    }
}
