import Foundation
@testable import Reconciler
import Resources
import Testing
import TestSupport

/// The QEMU kind's pure core: which VMs run, what the config QEMU should run
/// is, which values get generated and written back, how each change reaches a
/// running VM, and the plan it all makes. (The real QEMU is driven in DriversTests.)
@Suite("QEMU kind: the pure core")
struct QemuReconcilerTests {
    /// Answers observations from a table; never changes anything.
    struct TableDriver: QemuDriver {
        var observed: [Int: ObservedVM] = [:]
        var missingQEMU: String?
        func acceleration(setting: String) -> QemuAcceleration { QemuAcceleration(kvm: false, reason: "test node") }
        func hostProfile(node: String, acceleration: QemuAcceleration) -> QemuHostProfile {
            var profile = QemuHostProfile.pve11()
            profile.kvmAvailable = acceleration.kvm
            profile.bridgeScripts = false
            profile.missingQEMU = missingQEMU
            return profile
        }
        func runningVMIDs() -> [Int] {
            observed.compactMap { if case .running = $0.value.state { $0.key } else { nil } }
        }
        func observe(vmid: Int, taps: [String]) async -> ObservedVM { observed[vmid] ?? ObservedVM(state: .stopped) }
        func start(vmid: Int, arguments: [String]) async throws -> Int32 { Issue.record("compute must not start VMs"); return 0 }
        func stop(vmid: Int, timeout: Double) async throws -> String { Issue.record("compute must not stop VMs"); return "" }
        func perform(vmid: Int, _ step: QemuLiveStep) async throws { Issue.record("compute must not change VMs") }
        func writeConfig(path: String, text: String, expectedDigest: String?) throws { Issue.record("compute must not write configs") }
    }

    final class Tree {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("pvectl-qemu-core-\(UUID().uuidString)").path
        init(_ files: [String: String]) throws {
            for (path, text) in files {
                let url = URL(fileURLWithPath: root + "/" + path)
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try Data(text.utf8).write(to: url)
            }
        }
        deinit { try? FileManager.default.removeItem(atPath: root) }
        var state: DesiredState { DesiredState.load(root: root, interfaces: nil, node: "pve1") }
        func records(_ records: QemuRecords) throws { try StateStore(directory: root + "/state").save(records, as: "qemu") }

        func compute(_ driver: TableDriver, only: [String] = ["qemu"], restart: Set<Int>? = nil) async throws -> QemuReconciler.Computed {
            try await QemuReconciler(driver: driver, store: StateStore(directory: root + "/state"), restart: restart)
                .compute(state, only: only.compactMap(ResourceSelector.init))
        }
    }

    /// The plan's resources by VMID.
    static func byVMID(_ computed: QemuReconciler.Computed) -> [String: ResourcePlan] {
        Dictionary(uniqueKeysWithValues: computed.resources.map { ($0.name, $0) })
    }

    static func config(_ text: String) -> GuestConfig { GuestConfig.parse(text, file: "/pve/100.conf", kind: .qemu).0 }

    @Test("which VMs run: template, HA state, onboot, named with --only, else left alone")
    func intents() {
        typealias R = QemuReconciler
        #expect(R.intent(vmid: 1, config: ["template": "1", "onboot": "1"], haState: "started", named: true) == .stop("template: 1"))
        #expect(R.intent(vmid: 1, config: ["onboot": "1"], haState: "stopped", named: false) == .stop("HA state stopped"))
        #expect(R.intent(vmid: 1, config: [:], haState: "started", named: false) == .run("HA state started"))
        #expect(R.intent(vmid: 1, config: ["onboot": "1"], haState: "ignored", named: false) == .leave("HA state ignored"))
        #expect(R.intent(vmid: 1, config: ["onboot": "1"], haState: nil, named: false) == .run("onboot: 1"))
        #expect(R.intent(vmid: 1, config: ["onboot": "0"], haState: nil, named: true) == .run("named with --only"))
        #expect(R.intent(vmid: 1, config: [:], haState: nil, named: false) == .leave("onboot is not set"))
    }

    @Test("[PENDING] values replace the main section's and its delete: removes keys")
    func pendingApplies() {
        let config = Self.config("memory: 512\ncores: 1\nballoon: 256\n\n[PENDING]\nmemory: 1024\ndelete: balloon\n")
        let effective = QemuReconciler.effectiveConfig(config)
        #expect(effective["memory"] == "1024")
        #expect(effective["cores"] == "1")
        #expect(effective["balloon"] == nil)
    }

    @Test("generated MAC, SMBIOS UUID and vmgenid: derived from the file, only where missing")
    func generation() {
        let config = ["net0": "virtio,bridge=vmbr0", "net1": "model=e1000,bridge=vmbr1", "net2": "virtio=02:00:00:00:00:01,bridge=vmbr0",
                      "smbios1": "manufacturer=acme", "vmgenid": "1"]
        let first = QemuReconciler.generatedValues(vmid: 100, config: config, seed: "a", macPrefix: "BC:24:11")
        #expect(first == QemuReconciler.generatedValues(vmid: 100, config: config, seed: "a", macPrefix: "BC:24:11"), "a plan and its apply agree")
        #expect(first != QemuReconciler.generatedValues(vmid: 100, config: config, seed: "b", macPrefix: "BC:24:11"))
        let mac = try? #require(first["net0"]?.split(separator: ",").first?.split(separator: "=").last.map(String.init))
        #expect(mac?.hasPrefix("BC:24:11:") == true && mac?.count == 17, "\(first)")
        #expect(first["net1"]?.hasPrefix("model=e1000,bridge=vmbr1,macaddr=BC:24:11:") == true, "\(first)")
        #expect(first["net2"] == nil, "an existing MAC stays")
        #expect(first["smbios1"]?.hasPrefix("uuid=") == true && first["smbios1"]?.hasSuffix(",manufacturer=acme") == true)
        #expect(first["vmgenid"]?.count == 36)
        let short = QemuReconciler.generatedValues(vmid: 100, config: ["net0": "virtio,bridge=vmbr0", "smbios1": "uuid=x"], seed: "a",
                                                   macPrefix: "02:AA")
        #expect(short["net0"]?.hasPrefix("virtio=02:AA:") == true, "\(short)")
        #expect(short["smbios1"] == nil)
    }

    @Test("write-back sets values and moves applied keys out of [PENDING], keeping the rest pending")
    func rewrite() {
        let config = Self.config("name: a\nmemory: 512\n\n[PENDING]\nmemory: 1024\nmachine: q35\ndelete: tags\n")
        let partial = QemuReconciler.rewritten(config, values: ["memory": "1024"], removing: [], fromPending: ["memory"])
        #expect(partial.contains("memory: 1024\n"))
        #expect(partial.contains("[PENDING]\nmachine: q35\ndelete: tags\n") || partial.contains("[PENDING]\ndelete: tags\nmachine: q35\n"),
                "\(partial)")
        #expect(!partial.contains("memory: 512"))
        let all = QemuReconciler.rewritten(config, values: ["memory": "1024", "machine": "q35"], removing: ["tags"],
                                           fromPending: ["memory", "machine", "tags"])
        #expect(!all.contains("[PENDING]"), "\(all)")
        #expect(all.contains("machine: q35"))
    }

    @Test("how a change reaches a running VM")
    func classification() {
        let arguments = QemuArguments(["/usr/bin/kvm", "-netdev", "type=tap,id=net1,ifname=tap100i1,script=no,downscript=no",
                                       "-device", "virtio-net-pci,mac=BC:24:11:00:00:02,netdev=net1,bus=pci.0,addr=0x13,id=net1",
                                       "-drive", "file=/d.qcow2,if=none,id=drive-virtio1,format=qcow2",
                                       "-device", "virtio-blk-pci,drive=drive-virtio1,id=virtio1,bus=pci.0,addr=0xb",
                                       "-m", "size=1024,slots=255,maxmem=4096M",
                                       "-object", "memory-backend-ram,id=mem-dimm0,size=512M", "-device", "pc-dimm,id=dimm0,memdev=mem-dimm0,node=0"])
        func change(_ key: String, _ old: String?, _ new: String?, extra: [String: String] = [:], present: Set<String>? = nil) -> QemuKeyChange {
            var running = extra, desired = extra
            running[key] = old
            desired[key] = new
            return QemuLiveChanges.change(vmid: 100, key: key, running: running, desired: desired, arguments: arguments, present: present)
        }
        let cdArguments = QemuArguments(["/usr/bin/kvm", "-drive", "file=/iso/b.iso,if=none,id=drive-ide2,media=cdrom,format=raw,aio=io_uring"])
        let medium = QemuLiveChanges.change(vmid: 100, key: "ide2", running: ["ide2": "local:iso/a.iso,media=cdrom"],
                                            desired: ["ide2": "local:iso/b.iso,media=cdrom"], arguments: cdArguments)
        #expect(medium.steps == [.qmp("blockdev-change-medium", arguments: "{\"filename\":\"/iso/b.iso\",\"format\":\"raw\",\"id\":\"ide2\"}")])
        let eject = QemuLiveChanges.change(vmid: 100, key: "ide2", running: ["ide2": "local:iso/a.iso,media=cdrom"],
                                           desired: ["ide2": "none,media=cdrom"], arguments: cdArguments)
        #expect(eject.steps == [.qmp("eject", arguments: "{\"force\":true,\"id\":\"ide2\"}")])
        let balloon = change("balloon", "512", "768")
        #expect(balloon.changeClass == .live && balloon.steps == [.qmp("balloon", arguments: "{\"value\":805306368}")])
        #expect(change("balloon", "512", "0").changeClass == .restart)
        #expect(change("machine", nil, "q35").changeClass == .restart)
        #expect(change("name", "a", "b").changeClass == .none)
        let link = change("net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0", "virtio=BC:24:11:00:00:01,bridge=vmbr0,link_down=1")
        #expect(link.changeClass == .live && link.steps == [.qmp("set_link", arguments: "{\"name\":\"net0\",\"up\":false}")])
        let bridge = change("net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0", "virtio=BC:24:11:00:00:01,bridge=vmbr1,tag=5")
        #expect(bridge.steps == [.attachTap(tap: "tap100i0", bridge: "vmbr1", tag: 5)])
        let added = change("net1", nil, "virtio=BC:24:11:00:00:02,bridge=vmbr0")
        #expect(added.changeClass == .live)
        #expect(added.steps == [.monitor("netdev_add type=tap,id=net1,ifname=tap100i1,script=no,downscript=no"),
                                .attachTap(tap: "tap100i1", bridge: "vmbr0", tag: nil),
                                .monitor("device_add virtio-net-pci,mac=BC:24:11:00:00:02,netdev=net1,bus=pci.0,addr=0x13,id=net1")])
        let noNetworkHotplug = change("net1", nil, "virtio=BC:24:11:00:00:02,bridge=vmbr0", extra: ["hotplug": "disk"])
        #expect(noNetworkHotplug.changeClass == .restart && noNetworkHotplug.reason == "hotplug does not include network")
        let disk = change("virtio1", nil, "local:100/vm-100-disk-1.qcow2,size=1G")
        #expect(disk.steps == [.monitor("drive_add auto file=/d.qcow2,if=none,id=drive-virtio1,format=qcow2"),
                               .monitor("device_add virtio-blk-pci,drive=drive-virtio1,id=virtio1,bus=pci.0,addr=0xb")])
        #expect(change("virtio1", "local:100/vm-100-disk-1.qcow2,size=1G", "local:100/vm-100-disk-1.qcow2,size=2G").changeClass == .none,
                "growing is the storage kind's")
        #expect(change("ide0", nil, "local:100/vm-100-disk-1.qcow2").changeClass == .restart)
        let limits = change("sata0", "local:100/vm-100-disk-1.qcow2,size=1G", "local:100/vm-100-disk-1.qcow2,mbps_rd=1.5,iops_wr=30,size=1G")
        #expect(limits.changeClass == .live)
        #expect(limits.steps.first.map { "\($0)" }?.contains("\"bps_rd\":1572864") == true
                && limits.steps.first.map { "\($0)" }?.contains("\"iops_wr\":30") == true,
                "\(limits.steps)")
        let blockdev = QemuLiveChanges.throttleStep(key: "scsi0", ["mbps_rd": "2", "iops_max": "50"],
                                                    arguments: QemuArguments(["/usr/bin/kvm", "-blockdev",
                                                                              "{\"driver\":\"throttle\",\"node-name\":\"drive-scsi0\"}"]))
        let text = "\(blockdev)"
        #expect(text.hasPrefix("qmp qom-set {\"path\":\"throttle-drive-scsi0\",\"property\":\"limits\",\"value\":{"), "\(text)")
        #expect(text.contains("\"bps-read\":2097152") && text.contains("\"iops-total-max\":50") && text.contains("\"bps-total\":0")
                && text.contains("\"iops-write-max\":0"), "\(text)")
        #expect(change("virtio1", "local:100/vm-100-disk-1.qcow2,size=1G",
                       "local:100/vm-100-disk-1.qcow2,cache=writeback,size=1G").changeClass == .restart,
                "another option of the same volume waits for a restart")
        #expect(change("virtio1", "local:100/vm-100-disk-2.qcow2,size=1G",
                       "local:100/vm-100-disk-1.qcow2,size=1G").steps.first == .unplug(id: "virtio1"),
                "another volume: unplug, then plug the new one")
        #expect(change("vcpus", "1", "2", extra: ["cores": "2"]).changeClass == .restart, "cpu is not in the default hotplug")
        #expect(change("vcpus", "1", "2", extra: ["cores": "2", "hotplug": "cpu"]).steps == [.setCPUs(count: 2)])
        #expect(change("vcpus", "1", "3", extra: ["cores": "2", "hotplug": "cpu"]).changeClass == .restart)
        #expect(change("vcpus", "2", "1", extra: ["cores": "2", "hotplug": "cpu"]).steps == [.setCPUs(count: 1)])
        let tcgUnplug = QemuLiveChanges.change(vmid: 100, key: "vcpus", running: ["vcpus": "2", "cores": "2", "hotplug": "cpu"],
                                               desired: ["vcpus": "1", "cores": "2", "hotplug": "cpu"], arguments: arguments, emulated: true)
        #expect(tcgUnplug.changeClass == .restart && tcgUnplug.reason == "removing vCPUs crashes QEMU under TCG (emulation)")
        #expect(change("memory", "1024", "1536", extra: ["hotplug": "memory"]).reason == "memory hot-plug needs numa: 1")
        let memory = change("memory", "1024", "1536", extra: ["hotplug": "memory", "numa": "1"], present: ["net0"])
        #expect(memory.steps == [.monitor("object_add memory-backend-ram,id=mem-dimm0,size=512M"),
                                 .monitor("device_add pc-dimm,id=dimm0,memdev=mem-dimm0,node=0")])
        let shrink = change("memory", "2048", "1536", extra: ["hotplug": "memory", "numa": "1"], present: ["dimm0", "dimm1"])
        #expect(shrink.steps == [.unplug(id: "dimm1"), .qmpIgnoringFailure("object-del", arguments: "{\"id\":\"mem-dimm1\"}")])
    }

    @Test("a VM with a disk on a storage this node does not serve is not started: unavailable, with the reason")
    func inactiveStorage() async throws {
        let tree = try Tree([
            "storage.cfg": "dir: slow\n\tpath /srv/slow\n\tcontent images\n",
            "nodes/pve1/qemu-server/110.conf": "onboot: 1\nmemory: 512\nscsi0: slow:110/vm-110-disk-0.qcow2,size=1G\nide2: none,media=cdrom\n",
        ])
        let computed = try await QemuReconciler(driver: TableDriver(), store: StateStore(directory: tree.root + "/state"))
            .compute(tree.state, only: [ResourceSelector("qemu")!], inactiveStorages: ["slow": "disabled"])
        #expect(computed.resources.map(\.action) == [.unavailable])
        #expect(computed.resources.first?.message == "cannot start (onboot: 1): scsi0 is on storage slow, which is not active here (disabled)")
        #expect(computed.vms.isEmpty)
    }

    @Test("a node without QEMU says so: a VM that should run is unavailable because the binary is missing, not blocked by a version 0.0.0")
    func missingQEMU() async throws {
        let tree = try Tree(["nodes/pve1/qemu-server/120.conf": "onboot: 1\nmemory: 512\n", "nodes/pve1/qemu-server/121.conf": "memory: 512\n"])
        var driver = TableDriver()
        driver.missingQEMU = "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)"
        let computed = try await tree.compute(driver)
        #expect(computed.resources.map(\.id) == ["qemu/120"])
        #expect(computed.resources.first?.action == .unavailable)
        #expect(computed.resources.first?.message == "cannot start (onboot: 1): qemu-system-x86_64 is not installed (Debian package qemu-system-x86)")
        #expect(computed.problems.isEmpty)
    }

    @Test("a VM planned alone (the loop after an edit of its config) is not named: without onboot it is not started")
    func scopedIsNotNamed() async throws {
        let tree = try Tree(["nodes/pve1/qemu-server/121.conf": "memory: 512\n"])
        let reconciler = QemuReconciler(driver: TableDriver(), store: StateStore(directory: tree.root + "/state"))
        let only = [ResourceSelector("qemu/121")!]
        let scoped = try await reconciler.compute(tree.state, only: only, named: [])
        #expect(scoped.resources.isEmpty, "\(scoped.resources)")
        let named = try await reconciler.compute(tree.state, only: only)
        #expect(named.resources.first?.changes.first { $0.field == "state" }?.new == "running", "named by the operator, it starts")
    }

    /// Starts "succeed" with increasing pids; write-backs are kept, not written.
    final class StartingDriver: QemuDriver, @unchecked Sendable {
        // @unchecked: one apply at a time, calls in sequence.
        var started: [Int] = []
        func acceleration(setting: String) -> QemuAcceleration { QemuAcceleration(kvm: false, reason: "test node") }
        func hostProfile(node: String, acceleration: QemuAcceleration) -> QemuHostProfile {
            var profile = QemuHostProfile.pve11()
            profile.bridgeScripts = false
            return profile
        }
        func runningVMIDs() -> [Int] { [] }
        func observe(vmid: Int, taps: [String]) async -> ObservedVM { ObservedVM(state: .stopped) }
        func start(vmid: Int, arguments: [String]) async throws -> Int32 {
            started.append(vmid)
            return Int32(1000 + started.count)
        }
        func stop(vmid: Int, timeout: Double) async throws -> String { "ACPI shutdown" }
        func perform(vmid: Int, _ step: QemuLiveStep) async throws {}
        func writeConfig(path: String, text: String, expectedDigest: String?) throws {}
    }

    @Test("startup order and up= waits go through the injected clock: recorded, not slept; the records carry its time")
    func startupWaitsOnTheClock() async throws {
        let tree = try Tree([
            "nodes/pve1/qemu-server/130.conf": "onboot: 1\nmemory: 512\nstartup: order=2,up=30\n",
            "nodes/pve1/qemu-server/131.conf": "onboot: 1\nmemory: 512\nstartup: order=1,up=45\n",
            "nodes/pve1/qemu-server/132.conf": "onboot: 1\nmemory: 512\nstartup: order=3,up=60\n",
        ])
        let driver = StartingDriver()
        let clock = TestClock()
        let reconciler = QemuReconciler(driver: driver, store: StateStore(directory: tree.root + "/state"), clock: clock)
        let computed = try await reconciler.compute(tree.state, only: [ResourceSelector("qemu")!])
        let outcome = try await reconciler.apply(computed) { _ in }
        #expect(outcome.failed.isEmpty, "\(outcome.failed)")
        #expect(driver.started == [131, 130, 132])
        #expect(clock.waits == [45, 30], "a wait after each start but the last")
        let records = try #require(try StateStore(directory: tree.root + "/state").load("qemu", as: QemuRecords.self))
        #expect(records.vms["132"]?.startedAt == Date(timeIntervalSince1970: 1_700_000_000 + 75))
    }

    @Test("a start applies [PENDING]: the written file has the pending values in the main section and no pending section")
    func startMergesPending() async throws {
        let tree = try Tree([
            "nodes/pve1/qemu-server/120.conf": "onboot: 1\nmemory: 512\nballoon: 256\nsmbios1: uuid=6cf17dc3-8341-4ecc-aebd-7503f2583fb3\n\n[PENDING]\nmemory: 1024\ndelete: balloon\n",
        ])
        let computed = try await tree.compute(TableDriver())
        let written = try #require(computed.vms.first?.writeBack?.text)
        #expect(written == "memory: 1024\nonboot: 1\nsmbios1: uuid=6cf17dc3-8341-4ecc-aebd-7503f2583fb3\n", "\(written)")
        guard case .start(let spec)? = computed.vms.first?.action else {
            Issue.record("expected a start")
            return
        }
        #expect(spec.running["memory"] == "1024" && spec.running["balloon"] == nil)
    }

    @Test("machine layouts for hosts without qemu-server: q35 with four PCIe root ports and its PCI bridges")
    func layouts() throws {
        let q35 = try #require(QemuMachineLayouts.file(named: "pve-q35-4.0.cfg"))
        #expect(q35.components(separatedBy: "driver = \"pcie-root-port\"").count == 5)
        #expect(q35.contains("[device \"pci.3\"]\n  driver = \"pci-bridge\"\n  bus = \"pcidmi\"\n  addr = \"4.0\"\n  chassis_nr = \"4\"\n"))
        #expect(q35.contains("[device \"uhci-5\"]\n  driver = \"ich9-usb-uhci5\"\n  multifunction = \"on\"\n  bus = \"pcie.0\"\n  addr = \"1a.1\"\n  masterbus = \"ehci-2.0\"\n  firstport = \"2\"\n"))
        let old = try #require(QemuMachineLayouts.file(named: "pve-q35.cfg"))
        #expect(old.contains("ioh3420") && !old.contains("pci.3"))
        #expect(QemuMachineLayouts.file(named: "pve-usb.cfg")?.contains("\n  bus = ") == false)
        #expect(QemuMachineLayouts.file(named: "other.cfg") == nil)
    }

    @Test("plans: start, adopt, live update, pending only, --restart, stop template, orphan, frozen")
    func plans() async throws {
        let tree = try Tree([
            "nodes/pve1/qemu-server/100.conf": "onboot: 1\nmemory: 512\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0\n",
            "nodes/pve1/qemu-server/101.conf":
                "memory: 512\nmachine: pc-i440fx-9.0\nnet0: virtio=BC:24:11:00:00:02,bridge=vmbr0\nnet1: virtio=BC:24:11:00:00:03,bridge=vmbr0\n",
            "nodes/pve1/qemu-server/102.conf": "memory: 512\nmachine: q35\n",
            "nodes/pve1/qemu-server/103.conf": "memory: 512\ntemplate: 1\n",
            "nodes/pve1/qemu-server/104.conf": "memory 512\n",
            "nodes/pve1/qemu-server/105.conf": "memory: 512\n",
        ])
        var records = QemuRecords()
        records.vms["101"] = QemuVMRecord(pid: 11, running: ["memory": "512", "net0": "virtio=BC:24:11:00:00:02,bridge=vmbr0"],
                                          startedAt: Date(), accelerator: "tcg")
        records.vms["102"] = QemuVMRecord(pid: 12, running: ["memory": "512"], startedAt: Date(), accelerator: "tcg")
        try tree.records(records)
        let driver = TableDriver(observed: [
            101: ObservedVM(state: .running(pid: 11, status: "running"), deviceIDs: ["net0"]),
            102: ObservedVM(state: .running(pid: 12, status: "running"), deviceIDs: []),
            103: ObservedVM(state: .running(pid: 13, status: "running")),
            104: ObservedVM(state: .running(pid: 14, status: "running")),
            105: ObservedVM(state: .running(pid: 15, status: "running")),
            999: ObservedVM(state: .running(pid: 19, status: "running")),
        ])
        let computed = try await tree.compute(driver)
        let byName = Self.byVMID(computed)
        #expect(byName["100"]?.action == .create)
        #expect(byName["101"]?.action == .update, "a new NIC is live; the machine type waits")
        #expect(byName["101"]?.changes.first { $0.field == "net1" }?.changeClass == .live)
        #expect(byName["101"]?.changes.first { $0.field == "machine" }?.changeClass == .restart)
        #expect(byName["102"]?.action == .pending)
        #expect(byName["103"]?.action == .delete && byName["103"]?.message == "stop: template: 1")
        #expect(byName["104"]?.action == .blocked, "a broken config freezes its VM: \(computed.resources)")
        #expect(byName["105"]?.action == .update && byName["105"]?.message?.hasPrefix("adopt") == true)
        #expect(computed.vms.first { $0.vmid == 105 }?.writeBack?.text.contains("smbios1: uuid=") == true,
                "an adopted VM's generated values are written, so a later edit does not generate others")
        #expect(byName["999"]?.action == .delete)
        #expect(computed.notes.contains { $0.contains("TCG") })

        let pendingOnly = Plan(node: "pve1", inputs: [:], resources: computed.resources.filter { $0.name == "102" })
        #expect(!pendingOnly.hasChanges, "only pending changes: nothing for apply to do")
        #expect(pendingOnly.summary.pending == 1)

        let restarting = try await tree.compute(driver, only: ["qemu/102"], restart: [])
        #expect(restarting.resources.map(\.action) == [.replace])
        if case .restart(let timeout, let spec)? = restarting.vms.first?.action {
            #expect(timeout == 180)
            #expect(spec.arguments.contains("accel=tcg,type=q35+pve0"), "\(spec.arguments)")
        } else {
            Issue.record("expected a restart: \(restarting.vms.map(\.action))")
        }
    }

    @Test("a running VM that should stop is stopped even when its config no longer gives a command line; one that should keep running is blocked")
    func stopWithoutCommandLine() async throws {
        let tree = try Tree([
            "nodes/pve1/qemu-server/130.conf": "memory: 512\ntemplate: 1\nscsi0: gone:130/vm-130-disk-0.qcow2,size=1G\n",
            "nodes/pve1/qemu-server/131.conf": "memory: 512\nscsi0: gone:131/vm-131-disk-0.qcow2,size=1G\n",
        ])
        let driver = TableDriver(observed: [
            130: ObservedVM(state: .running(pid: 30, status: "running")),
            131: ObservedVM(state: .running(pid: 31, status: "running")),
        ])
        let computed = try await tree.compute(driver)
        let byName = Self.byVMID(computed)
        #expect(byName["130"]?.action == .delete && byName["130"]?.message == "stop: template: 1", "\(computed.resources)")
        #expect(computed.vms.map(\.vmid) == [130])
        #expect(byName["131"]?.action == .blocked)
        #expect(byName["131"]?.message?.hasSuffix("; the running VM is left as it is") == true, "\(byName["131"]?.message ?? "")")
        #expect(computed.problems.map(\.location.file) == [tree.root + "/nodes/pve1/qemu-server/131.conf"])
    }

    @Test("a guest that powered itself off: its QEMU is quit unless the VM should run, then it starts again")
    func guestPoweroff() async throws {
        let tree = try Tree([
            "nodes/pve1/qemu-server/140.conf": "memory: 512\n",
            "nodes/pve1/qemu-server/141.conf": "memory: 512\nonboot: 1\n",
        ])
        let driver = TableDriver(observed: [
            140: ObservedVM(state: .running(pid: 40, status: "shutdown")),
            141: ObservedVM(state: .running(pid: 41, status: "shutdown")),
        ])
        let computed = try await tree.compute(driver)
        let byName = Self.byVMID(computed)
        #expect(byName["140"]?.action == .delete && byName["140"]?.message == "clean up: the guest powered itself off", "\(computed.resources)")
        #expect(byName["141"]?.action == .create, "onboot: started again (the driver replaces the powered-off QEMU)")
    }
}

/// The command line asks the host profile whether a serial device exists: the Reconciler itself looks at no file.
@Suite("QEMU command line: host facts come from the host profile")
struct QemuHostFactsTests {
    static let config = GuestConfig.parse("memory: 512\nserial0: /dev/ttyS9\n", file: "qemu-server/100.conf", kind: .qemu).0

    @Test("a serial device the profile knows as a character device is used; otherwise upstream's error")
    func serialDevice() throws {
        var host = QemuHostProfile.pve11()
        #expect(throws: (any Error).self) { try QemuCommandLine(vmid: 100, config: Self.config, storage: nil, host: host).build() }
        host.isCharacterDevice = { $0 == "/dev/ttyS9" }
        let arguments = try QemuCommandLine(vmid: 100, config: Self.config, storage: nil, host: host).build().arguments
        #expect(arguments.joined(separator: " ").contains("-chardev serial,id=serial0,path=/dev/ttyS9 -device isa-serial,chardev=serial0"))
    }
}
