import Foundation
import Resources

/// The QEMU command line of a VM config, as Proxmox VE's `qm showcmd` builds
/// it: process and monitor sockets, machine and its version, CPU, memory,
/// PCI bridges and fixed PCI addresses, USB, display, balloon, disks as
/// -blockdev trees (throttle → format → protocol) with their devices, NICs
/// as tap netdevs on the NIC's bridge, boot order, and the machine flags.
public struct QemuCommandLine {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var message: String
        public var description: String { message }
        init(_ message: String) { self.message = message }
    }

    public let vmid: Int
    let conf: [String: String]
    let storage: SectionConfigFile?
    let host: QemuHostProfile
    /// `virtual-guest/cpu-models.conf`: the cluster's custom CPU models.
    var cpuModels: SectionConfigFile?

    public init(vmid: Int, config: GuestConfig, storage: SectionConfigFile?, host: QemuHostProfile, cpuModels: SectionConfigFile? = nil) {
        self.cpuModels = cpuModels
        self.vmid = vmid
        var conf: [String: String] = [:]
        for entry in config.main.effectiveEntries { conf[entry.key] = entry.value }
        // qemu-server reads `boot:` with nothing after it as "boot from nothing";
        // the config parser drops empty values, so look at the main section's lines.
        if conf["boot"] == nil {
            for line in splitLines(config.losslessText()) {
                if line.hasPrefix("[") { break }
                if line.trimmingCharacters(in: .whitespacesAndNewlines) == "boot:" { conf["boot"] = "" }
            }
        }
        self.conf = conf
        self.storage = storage
        self.host = host
        self.templateSource = false
    }

    // MARK: machine

    /// `machine: [type=]<type>[,viommu=..][,enable-s3=..][,enable-s4=..][,aw-bits=..]`.
    var machineProperty: PropertyString { PropertyString(parsing: conf["machine"] ?? "") }

    var machineConfigured: String? {
        let property = machineProperty
        return property["type"] ?? property.bareValue
    }

    var arch: String { conf["arch"] ?? host.arch }

    var isQ35: Bool { (machineConfigured ?? "").contains("q35") }

    /// The highest +pveN each QEMU machine version knows (Machine.pm's table).
    static func maxPVEVersion(_ version: QemuVersion) -> Int {
        switch (version.major, version.minor) {
        case (4, 1): 2
        case (9, 2): 1
        case (10, 0): 1
        case (10, 1): 1
        case (11, 0): 2
        default: 0
        }
    }

    /// The machine type and the version features are checked against.
    func machine() throws -> (type: String, version: QemuVersion, pve: Int, pinned: Bool) {
        let configured = machineConfigured
        let base = configured ?? (arch == "aarch64" ? "virt" : "pc")
        let pattern = try NSRegularExpression(pattern: #"^(?:pc(?:-i440fx|-q35)?|virt)-(\d+)\.(\d+)(?:\+pve(\d+))?(?:\.pxe)?$"#)
        let range = NSRange(base.startIndex..., in: base)
        if let match = pattern.firstMatch(in: base, range: range) {
            func group(_ index: Int) -> Int? {
                guard let r = Range(match.range(at: index), in: base) else { return nil }
                return Int(base[r])
            }
            let version = QemuVersion(group(1)!, group(2)!)
            let pve = group(3) ?? 0
            return (base, version, pve, true)
        }
        // Windows guests keep the machine version they were created with (5.1
        // before qemu-server recorded it), so a QEMU update does not change their hardware.
        if windowsVersion > 0 && (configured == nil || configured == "pc" || configured == "q35") {
            let created = PropertyString(parsing: conf["meta"] ?? "")["creation-qemu"].flatMap(QemuVersion.init) ?? QemuVersion(5, 1)
            let pinned = QemuVersion(created.major, created.minor)
            return ("\(base == "q35" ? "pc-q35" : "pc-i440fx")-\(pinned.major).\(pinned.minor)", pinned, 0, true)
        }
        let version = QemuVersion(host.qemuVersion.major, host.qemuVersion.minor)
        return (base, version, Self.maxPVEVersion(version), false)
    }

    // MARK: small helpers

    static func boolean(_ value: String?) -> Bool? {
        guard let value else { return nil }
        return ["1", "on", "yes", "true"].contains(value.lowercased())
    }

    var windowsVersion: Int {
        switch conf["ostype"] ?? "" {
        case "wxp", "w2k", "w2k3": 5
        case "w2k8", "wvista": 6
        case "win7": 7
        case "win8": 8
        case "win10": 10
        case "win11": 11
        default: 0
        }
    }

    var isTemplate: Bool { Self.boolean(conf["template"]) == true }

    /// `pci.0,addr=0x12`-style suffix from the fixed PCI address table.
    static func pciAddress(_ id: String, bridges: inout Set<Int>, busName: String = "pci") -> String {
        guard let (bus, addr) = pciAddressMap[id] else { return "" }
        bridges.insert(bus)
        return ",bus=\(busName).\(bus),addr=0x\(String(addr, radix: 16))"
    }

    static let pciAddressMap: [String: (Int, Int)] = {
        var map: [String: (Int, Int)] = [
            "piix3": (0, 1), "ehci": (0, 1), "vga": (0, 2), "legacy-igd": (0, 2), "balloon0": (0, 3), "watchdog": (0, 4),
            "scsihw0": (0, 5), "pci.3": (0, 5), "scsihw1": (0, 6), "ahci0": (0, 7), "qga0": (0, 8), "spice": (0, 9),
            "hostpci0": (0, 16), "hostpci1": (0, 17), "vga1": (0, 24), "vga2": (0, 25), "vga3": (0, 26),
            "hostpci2": (0, 27), "hostpci3": (0, 28), "pci.1": (0, 30), "pci.2": (0, 31),
            "xhci": (1, 27), "pci.4": (1, 28), "rng0": (1, 29), "pci.2-igd": (1, 30),
            "ivshmem": (2, 11), "audio0": (2, 12), "scsihw2": (4, 1), "scsihw3": (4, 2), "scsihw4": (4, 3),
        ]
        for index in 0...5 { map["virtio\(index)"] = (0, 10 + index) }
        for index in 0...5 { map["net\(index)"] = (0, 18 + index) }
        for index in 6...31 { map["net\(index)"] = (1, index - 5) }
        for index in 6...15 { map["virtio\(index)"] = (2, index - 5) }
        for index in 4...15 { map["hostpci\(index)"] = (2, index + 9) }
        for index in 0...30 { map["virtioscsi\(index)"] = (3, index + 1) }
        return map
    }()

    /// Shell quoting as upstream's showcmd: single quotes around anything
    /// with `=` or a character outside a conservative set.
    public static func quote(_ argument: String) -> String {
        let plain = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_!%+,-./:@^")
        if !argument.isEmpty && !argument.contains("=") && argument.unicodeScalars.allSatisfy({ plain.contains($0) }) {
            return argument
        }
        return "'" + argument.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// `qm showcmd` output: one line, or `--pretty` with one option per line.
    public static func render(_ arguments: [String], pretty: Bool) -> String {
        let line = arguments.map(quote).joined(separator: " ")
        guard pretty else { return line + "\n" }
        return line.replacingOccurrences(of: " -", with: " \\\n  -") + "\n"
    }

    // MARK: the command

    public func arguments() throws -> [String] { try build().arguments }

    /// The command line and the warnings upstream prints while building it.
    public func build() throws -> (arguments: [String], warnings: [String]) {
        if isTemplate { return try templateCommand().build() }
        var warnings: [String] = []
        let (machineType, machineVersion, machinePVE, machinePinned) = try machine()
        func atLeast(_ major: Int, _ minor: Int, _ pve: Int = 0) -> Bool {
            let version = QemuVersion(major, minor)
            if machineVersion != version { return machineVersion > version }
            return machinePVE >= pve
        }
        guard host.qemuVersion >= QemuVersion(6, 0) else {
            throw Failure("Detected old QEMU binary ('\(host.qemuVersion)', at least 6.0 is required)")
        }
        let printedMachine = machineType.contains("+pve") ? machineType : machineType + (machinePinned ? "+pve0" : "")
        guard host.qemuVersion >= QemuVersion(machineVersion.major, machineVersion.minor) else {
            throw Failure("Installed QEMU version '\(host.qemuVersion)' is too old to run machine type '\(printedMachine)', "
                              + "please upgrade node '\(host.nodeName)'")
        }
        if machinePVE > Self.maxPVEVersion(machineVersion) {
            throw Failure("Installed qemu-server (max feature level for \(machineVersion.major).\(machineVersion.minor) "
                              + "is pve\(Self.maxPVEVersion(machineVersion))) is too old to run machine type '\(printedMachine)', "
                              + "please upgrade node '\(host.nodeName)'")
        }
        let viommu = machineProperty["viommu"]
        if viommu == "intel" && !isQ35 { throw Failure("to use Intel vIOMMU please set the machine type to q35") }
        if machineProperty["aw-bits"] != nil && viommu == nil { throw Failure("cannot set aw-bits if no vIOMMU is configured") }
        let winversion = windowsVersion
        let native = arch == host.arch
        let kvm = Self.boolean(conf["kvm"]) ?? native
        if kvm && !host.kvmAvailable {
            throw Failure("KVM virtualisation configured, but not available. Either disable in VM configuration or enable in BIOS.")
        }
        let q35 = isQ35

        var cmd: [String] = []
        var devices: [String] = []
        var machineFlags: [String] = []
        var rtcFlags: [String] = []
        var bridges: Set<Int> = []
        /// The +pveN the features in use need (printed in the machine type).
        var requiredPVE = 0

        if let affinity = conf["affinity"] { cmd += ["/usr/bin/taskset", "--cpu-list", "--all-tasks", affinity] }
        cmd.append(host.binary(arch))
        if host.proxmoxQEMU { cmd += ["-id", String(vmid)] }  // a Proxmox QEMU option
        cmd += ["-name", conf["name"] ?? "vm\(vmid)"]
        cmd.append("-no-shutdown")
        cmd += ["-chardev", "socket,id=qmp,path=/var/run/qemu-server/\(vmid).qmp,server=on,wait=off", "-mon", "chardev=qmp,mode=control"]
        if atLeast(2, 12) {
            let reconnect = host.qemuVersion >= QemuVersion(9, 2) ? "reconnect-ms=5000" : "reconnect=5"
            cmd += ["-chardev", "socket,id=qmp-event,path=/var/run/qmeventd.sock,\(reconnect)", "-mon", "chardev=qmp-event,mode=control"]
        }
        cmd += ["-pidfile", "/var/run/qemu-server/\(vmid).pid", "-daemonize"]
        if let smbios = conf["smbios1"] { cmd += ["-smbios", "type=1,\(smbios)"] }

        if conf["bios"] == "ovmf" {
            let (ovmf, flags) = try ovmfArguments(q35: q35, machineAtLeast: atLeast)
            cmd += ovmf
            machineFlags += flags
        }
        // A Linux VM on an unversioned q35 created before QEMU 6.1 keeps ACPI PCI
        // hotplug off on bridges, as it had (qemu-server's created-version fixups).
        let createdWith = PropertyString(parsing: conf["meta"] ?? "")["creation-qemu"].flatMap(QemuVersion.init)
        if q35 && !machinePinned && conf["ostype"] == "l26" && (createdWith.map { $0 < QemuVersion(6, 1) } ?? true)
            && host.qemuVersion >= QemuVersion(6, 1) {
            cmd += ["-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"]
        }
        if q35 {
            devices += ["-readconfig", host.machineConfigDirectory + (atLeast(4, 0) ? "/pve-q35-4.0.cfg" : "/pve-q35.cfg")]
        }
        if let vmgenid = conf["vmgenid"], vmgenid != "0" { devices += ["-device", "vmgenid,guid=\(vmgenid)"] }

        // USB controller and the tablet.
        let vga = vgaProperties(winversion: winversion, machineAtLeast: atLeast)
        var tablet = Self.boolean(conf["tablet"]) ?? true
        if conf["tablet"] == nil && (vga.qxl > 0 || vga.type.hasPrefix("serial")) { tablet = false }
        let qemuXHCI = atLeast(7, 1, 0) && (conf["ostype"] == "l26" || winversion > 7)
        devices += try usbControllers(q35: q35, qemuXHCI: qemuXHCI, bridges: &bridges)
        if tablet {
            devices += ["-device", "usb-tablet,id=tablet,bus=\(q35 || arch == "aarch64" ? "ehci" : "uhci").0,port=1"]
            if arch == "aarch64" { devices += ["-device", "usb-kbd,id=keyboard,bus=ehci.0,port=2"] }
        }

        let bootOrder = try bootOrder()
        devices += try hostPCIDevices(q35: q35, bridges: &bridges, bootOrder: bootOrder)
        devices += try usbDevices(qemuXHCI: qemuXHCI, spiceUSB3: atLeast(4, 0, 0), bootOrder: bootOrder)

        for index in 0..<4 {
            guard let path = conf["serial\(index)"] else { continue }
            if path == "socket" {
                devices += ["-chardev", "socket,id=serial\(index),path=/var/run/qemu-server/\(vmid).serial\(index),server=on,wait=off"]
                devices += arch == "aarch64" && index == 0 ? ["-serial", "chardev:serial\(index)"] : ["-device", "isa-serial,chardev=serial\(index)"]
            } else {
                guard host.isCharacterDevice(path) else { throw Failure("no such serial device") }
                devices += ["-chardev", "serial,id=serial\(index),path=\(path)", "-device", "isa-serial,chardev=serial\(index)"]
            }
        }

        // CPUs.
        let sockets = Int(conf["sockets"] ?? conf["smp"] ?? "1") ?? 1
        let cores = Int(conf["cores"] ?? "1") ?? 1
        let maxcpus = sockets * cores
        let vcpus = Int(conf["vcpus"] ?? "") ?? maxcpus
        guard host.cpuCount >= maxcpus else { throw Failure("MAX \(host.cpuCount) vcpus allowed per VM on this node") }
        let hotplug = hotplugFeatures
        if hotplug.contains("cpu") && atLeast(2, 7) {
            cmd += ["-smp", "1,sockets=\(sockets),cores=\(cores),maxcpus=\(maxcpus)"]
        } else {
            cmd += ["-smp", "\(vcpus),sockets=\(sockets),cores=\(cores),maxcpus=\(maxcpus)"]
        }
        cmd.append("-nodefaults")
        cmd += ["-boot", "menu=on,strict=on,reboot-timeout=1000" + (host.bootSplash.map { ",splash=\($0)" } ?? "")]
        if Self.boolean(conf["acpi"]) == false { machineFlags.append("acpi=off") }
        if Self.boolean(conf["reboot"]) == false { cmd.append("-no-reboot") }

        if conf["tpmstate0"] != nil && !templateSource {
            devices += ["-chardev", "socket,id=tpmchar,path=/var/run/qemu-server/\(vmid).swtpm",
                        "-tpmdev", "emulator,id=tpmdev,chardev=tpmchar",
                        "-device", arch == "aarch64" ? "tpm-tis-device,tpmdev=tpmdev" : "tpm-tis,tpmdev=tpmdev"]
        }
        if !vga.type.hasPrefix("serial") && vga.type != "none" {
            devices += ["-device", try vgaDevice(vga, winversion: winversion, q35: q35, bridges: &bridges, machineAtLeast: atLeast)]
            cmd += ["-vnc", "unix:/var/run/qemu-server/\(vmid).vnc,password=on"]
        } else {
            if vga.type == "none" { cmd += ["-vga", "none"] }
            cmd.append("-nographic")
        }

        // Clock.
        var tdf = Self.boolean(conf["tdf"]) ?? false
        var localtime = Self.boolean(conf["localtime"])
        if winversion >= 5 {
            if localtime == nil { localtime = true }
            if Self.boolean(conf["acpi"]) != false && conf["tdf"] == nil { tdf = true }
        }
        if winversion >= 6 {
            cmd += ["-global", "kvm-pit.lost_tick_policy=discard"]
            machineFlags.append("hpet=off")
        } else if conf["ostype"] == "l26" && atLeast(10, 1) && arch == "x86_64" {
            // The HPET is an x86 device; Linux guests keep better time without it.
            machineFlags.append("hpet=off")
        }
        if tdf { rtcFlags.append("driftfix=slew") }
        if let startdate = conf["startdate"], startdate != "now" {
            rtcFlags.append("base=\(startdate)")
        } else if localtime == true {
            rtcFlags.append("base=localtime")
        }

        cmd += ["-cpu", try cpuArgument(kvm: kvm, winversion: winversion, machineAtLeast: atLeast, requiredPVE: &requiredPVE, warnings: &warnings)]
        cmd += try memoryArguments(sockets: sockets, cores: cores, hotplug: hotplug.contains("memory"))

        if Self.boolean(conf["freeze"]) == true { cmd.append("-S") }
        if let keyboard = conf["keyboard"] { cmd += ["-k", keyboard] }

        // Guest agent.
        let agent = PropertyString(parsing: conf["agent"] ?? "0")
        if Self.boolean(agent["enabled"] ?? agent.bareValue) == true {
            devices += ["-chardev", "socket,path=/var/run/qemu-server/\(vmid).qga,server=on,wait=off,id=qga0"]
            if (agent["type"] ?? "virtio") == "virtio" {
                devices += ["-device", "virtio-serial,id=qga0\(Self.pciAddress("qga0", bridges: &bridges))",
                            "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"]
            } else {
                devices += ["-device", "isa-serial,chardev=qga0"]
            }
        }

        if let rng = conf["rng0"], atLeast(4, 1, 2) {
            if machineVersion == QemuVersion(4, 1) { requiredPVE = max(requiredPVE, 2) }
            let property = PropertyString(parsing: rng)
            let source = property["source"] ?? property.bareValue ?? "/dev/urandom"
            devices += ["-object", "rng-random,filename=\(source),id=rng0"]
            var device = "virtio-rng-pci,rng=rng0,max-bytes=\(property["max_bytes"] ?? "1024")"
            let period = property["period"] ?? "1000"
            if period != "0" { device += ",period=\(period)" }
            devices += ["-device", device + Self.pciAddress("rng0", bridges: &bridges)]
        }

        // SPICE: the vdagent channel (also for VNC clipboard) and the server.
        let spice = vga.qxl > 0 || vga.type.hasPrefix("virtio")
        if spice || vga.clipboard == "vnc" {
            if vga.qxl > 1 {
                if winversion > 0 {
                    for extra in 1..<vga.qxl {
                        devices += ["-device", try vgaDevice(vga, winversion: winversion, q35: q35, bridges: &bridges,
                                                             machineAtLeast: atLeast, id: extra)]
                    }
                } else {
                    let ram = vga.memory.map { String(vga.qxl * 4 * $0 * 1024 * 1024) } ?? "134217728"
                    let vram = vga.memory.map { String(vga.qxl * 2 * $0 * 1024 * 1024) } ?? "67108864"
                    cmd += ["-global", "qxl-vga.ram_size=\(ram)", "-global", "qxl-vga.vram_size=\(vram)"]
                }
            }
            devices += ["-device", "virtio-serial,id=spice\(Self.pciAddress("spice", bridges: &bridges))"]
            devices += ["-chardev", vga.clipboard == "vnc" ? "qemu-vdagent,id=vdagent,name=vdagent,clipboard=on" : "spicevmc,id=vdagent,name=vdagent"]
            devices += ["-device", "virtserialport,chardev=vdagent,name=com.redhat.spice.0"]
            if spice {
                let enhancements = PropertyString(parsing: conf["spice_enhancements"] ?? "")
                if Self.boolean(enhancements["foldersharing"]) == true {
                    devices += ["-chardev", "spiceport,id=foldershare,name=org.spice-space.webdav.0",
                                "-device", "virtserialport,chardev=foldershare,name=org.spice-space.webdav.0"]
                }
                var options = "tls-port=61000,addr=127.0.0.1,tls-ciphers=HIGH,seamless-migration=on"
                if let streaming = enhancements["videostreaming"] { options += ",streaming-video=\(streaming)" }
                devices += ["-spice", options]
            }
        }

        // Balloon, on unless balloon: 0.
        if conf["balloon"] != "0" {
            var balloon = "virtio-balloon-pci,id=balloon0\(Self.pciAddress("balloon0", bridges: &bridges))"
            if atLeast(6, 2) { balloon += ",free-page-reporting=on" }
            devices += ["-device", balloon]
        }
        if let watchdog = conf["watchdog"] {
            let property = PropertyString(parsing: watchdog)
            devices += ["-device", (property["model"] ?? property.bareValue ?? "i6300esb") + Self.pciAddress("watchdog", bridges: &bridges)]
            if let action = property["action"] { devices += ["-watchdog-action", action] }
        }
        if let initiator = host.iscsiInitiator { devices += ["-iscsi", "initiator-name=\(initiator)"] }

        // Disks.
        let scsihw = conf["scsihw"] ?? "lsi"
        var scsiControllers: Set<String> = []
        var ahciControllers: Set<Int> = []
        for key in Self.driveKeys where conf[key] != nil {
            guard var drive = Drive(key: key, value: conf[key]!) else { continue }
            drive.bootindex = bootOrder[key]
            if drive.interface == "virtio", drive.iothread {
                cmd += ["-object", "iothread,id=iothread-\(key)"]
            }
            if drive.interface == "scsi" {
                let (maxdev, prefix) = Self.scsiLayout(conf["scsihw"])
                let controller = "\(prefix)\(drive.index / maxdev)"
                let address = Self.pciAddress(controller, bridges: &bridges)
                var iothread = ""
                if conf["scsihw"] == "virtio-scsi-single" && drive.iothread {
                    iothread = ",iothread=iothread-\(controller)"
                    cmd += ["-object", "iothread,id=iothread-\(controller)"]
                }
                let queues = conf["scsihw"] == "virtio-scsi-single" ? drive.options["queues"].map { ",num_queues=\($0)" } ?? "" : ""
                if !scsiControllers.contains(controller) {
                    let type = scsihw.hasPrefix("virtio-scsi-single") ? "virtio-scsi-pci" : scsihw
                    devices += ["-device", "\(type),id=\(controller)\(address)\(iothread)\(queues)"]
                    scsiControllers.insert(controller)
                }
            }
            if drive.interface == "sata" {
                let controller = drive.index / 6
                if !ahciControllers.contains(controller) {
                    devices += ["-device", "ahci,id=ahci\(controller),multifunction=on\(Self.pciAddress("ahci\(controller)", bridges: &bridges))"]
                    ahciControllers.insert(controller)
                }
            }
            let blockdevEra = atLeast(10, 0)
            if blockdevEra {
                if drive.file != "none" {
                    cmd += ["-object", CanonicalJSON.object(["id": .string("throttle-drive-\(key)"), "limits": .object(drive.throttleLimits),
                                                             "qom-type": .string("throttle-group")]).text]
                    devices += ["-blockdev", try blockdev(drive, readOnly: templateSource).text]
                }
            } else {
                devices += ["-drive", try legacyDrive(drive)]
            }
            devices += ["-device", try driveDevice(drive, scsihw: conf["scsihw"], q35: q35, bridges: &bridges, blockdevEra: blockdevEra)]
        }

        // NICs.
        for index in 0..<32 {
            guard let value = conf["net\(index)"] else { continue }
            let net = try NIC(index: index, value: value)
            devices += ["-netdev", netdev(net, native: native)]
            devices += ["-device", try netDevice(net, bootindex: bootOrder["net\(index)"], bridges: &bridges, machineAtLeast: atLeast,
                                                 oldBIOSFiles: machineType.hasSuffix(".pxe"))]
        }

        // PCI bridges the devices above need, in front of them.
        if bridges.contains(4) { bridges.insert(1) }
        if !q35 {
            if atLeast(2, 3) { bridges.formUnion([1, 2]) }
            if scsihw.hasPrefix("virtio-scsi-single") { bridges.insert(3) }
        }
        for bridge in bridges.sorted(by: >) where bridge > 0 {
            if q35 && bridge < 4 { continue }
            var scratch: Set<Int> = []
            let device = "pci-bridge,id=pci.\(bridge),chassis_nr=\(bridge)\(Self.pciAddress("pci.\(bridge)", bridges: &scratch))"
            if q35 {
                devices.insert(contentsOf: ["-device", device], at: min(2, devices.count))
            } else {
                devices.insert(contentsOf: ["-device", device], at: 0)
            }
        }

        if !kvm { machineFlags.append("accel=tcg") }
        // Power states: S3/S4 off unless the machine property enables them.
        let chipset = q35 ? "ICH9-LPC" : "PIIX4_PM"
        if atLeast(9, 2, 1) && !machineType.hasPrefix("virt") {
            if machineProperty["enable-s3"].flatMap(Self.boolean) != true { cmd += ["-global", "\(chipset).disable_s3=1"] }
            if machineProperty["enable-s4"].flatMap(Self.boolean) != true { cmd += ["-global", "\(chipset).disable_s4=1"] }
        }
        if (conf["bios"] == nil || conf["bios"] == "seabios"), vga.type.hasPrefix("serial") || vga.type == "none" {
            machineFlags.append("smm=off")
        }
        var typeName = machineType
        if typeName.hasSuffix(".pxe") { typeName.removeLast(4) }
        if let plus = typeName.range(of: "+pve") { typeName = String(typeName[..<plus.lowerBound]) }
        machineFlags.append(host.proxmoxQEMU ? "type=\(typeName)+pve\(requiredPVE)" : "type=\(typeName)")
        var sevMachineFlag = false
        if let sevValue = conf["amd-sev"] {
            let property = PropertyString(parsing: sevValue)
            let type = property["type"] ?? property.bareValue ?? "std"
            guard let sev = host.sev else { throw Failure("Your CPU does not support AMD SEV.") }
            if type == "es" && !sev.es { throw Failure("Your CPU does not support AMD SEV-ES.") }
            if type == "snp" && !sev.snp { throw Failure("Your CPU does not support AMD SEV-SNP.") }
            let object: String
            if type == "snp" {
                object = "sev-snp-guest,id=sev0,cbitpos=\(sev.cbitpos),reduced-phys-bits=\(sev.reducedPhysBits),policy=0xb0000"
            } else {
                var policy = 0x8
                if type == "es" { policy |= 0x4 }
                if Self.boolean(property["no-debug"]) == true { policy |= 0x1 }
                if Self.boolean(property["no-key-sharing"]) == true { policy |= 0x2 }
                object = "sev-guest,id=sev0,cbitpos=\(sev.cbitpos),reduced-phys-bits=\(sev.reducedPhysBits),policy=0x\(String(policy, radix: 16))"
            }
            devices += ["-object", object]
            sevMachineFlag = true
        }
        if let viommu {
            let awBits = machineProperty["aw-bits"].map { ",aw-bits=\($0)" } ?? ""
            if viommu == "intel" {
                devices.insert(contentsOf: ["-device", "intel-iommu,intremap=on,caching-mode=on\(awBits)"], at: 0)
                machineFlags.append("kernel-irqchip=split")
            } else if viommu == "virtio" {
                devices += ["-device", "virtio-iommu-pci\(awBits)"]
            }
        }

        if sevMachineFlag { machineFlags.append("confidential-guest-support=sev0") }
        if arch == "aarch64" && machineType.hasPrefix("virt") {
            // The virt machine's root bus is PCIe.
            devices = devices.map { $0.replacingOccurrences(of: ",bus=pci.", with: ",bus=pcie.") }
        }
        cmd += devices
        if !rtcFlags.isEmpty { cmd += ["-rtc", rtcFlags.joined(separator: ",")] }
        if !machineFlags.isEmpty { cmd += ["-machine", machineFlags.joined(separator: ",")] }
        // Base volumes are read-only: a template runs (for backups) on a temporary overlay.
        if templateSource { cmd.append("-snapshot") }
        if let args = conf["args"] { cmd += Self.splitArguments(args) }
        return (cmd, warnings)
    }

    /// A template only starts for backups: its disks and little else.
    func templateCommand() -> QemuCommandLine {
        var reduced: [String: String] = ["template": "0", "kvm": "0", "vga": "none"]
        for key in ["scsihw", "bios", "name"] { if let value = conf[key] { reduced[key] = value } }
        for key in Self.driveKeys + ["efidisk0", "tpmstate0"] { if let value = conf[key] { reduced[key] = value } }
        var reducedCommand = QemuCommandLine(vmid: vmid, conf: reduced, storage: storage, host: host, templateSource: true)
        reducedCommand.cpuModels = cpuModels
        return reducedCommand
    }

    let templateSource: Bool

    init(vmid: Int, conf: [String: String], storage: SectionConfigFile?, host: QemuHostProfile, templateSource: Bool) {
        self.vmid = vmid
        self.conf = conf
        self.storage = storage
        self.host = host
        self.templateSource = templateSource
    }

    static func splitArguments(_ text: String) -> [String] {
        var result: [String] = []
        var current = ""
        var quote: Character?
        var active = false
        for character in text {
            if let open = quote {
                if character == open { quote = nil } else { current.append(character) }
            } else if character == "'" || character == "\"" {
                quote = character
                active = true
            } else if character == " " || character == "\t" {
                if active { result.append(current) }
                current = ""
                active = false
            } else {
                current.append(character)
                active = true
            }
        }
        if active { result.append(current) }
        return result
    }

    // MARK: parts

    var hotplugFeatures: Set<String> {
        let value = conf["hotplug"] ?? "1"
        if value == "0" { return [] }
        if value == "1" { return ["network", "disk", "usb"] }
        return Set(value.split(separator: ",").map(String.init))
    }

    /// -m, the NUMA nodes and, with memory hotplug, the DIMMs (qemu-server's Memory.pm).
    func memoryArguments(sockets: Int, cores: Int, hotplug: Bool) throws -> [String] {
        var cmd: [String] = []
        let memory = memoryMiB
        let numa = Self.boolean(conf["numa"]) == true
        let hugepages = conf["hugepages"]
        var staticMemory = memory
        if hotplug {
            guard numa else { throw Failure("NUMA needs to be enabled for memory hotplug") }
            let maxMemory = maxMemoryMiB
            if memory > maxMemory { throw Failure("Total memory is bigger than \(maxMemory)MB") }
            staticMemory = 1024 * (hugepages == "1024" ? sockets : 1)
            if memory < staticMemory { throw Failure("minimum memory must be \(staticMemory)MB") }
            cmd += ["-m", "size=\(staticMemory),slots=255,maxmem=\(maxMemory)M"]
        } else {
            cmd += ["-m", String(memory)]
        }
        if hugepages != nil && !numa { throw Failure("numa needs to be enabled to use hugepages") }
        func memoryObject(_ id: String, _ size: Int) -> String {
            guard let hugepages else { return "memory-backend-ram,id=\(id),size=\(size)M" }
            let pageKiB = hugepages == "1024" ? 1_048_576 : (hugepages == "2" ? 2048 : (size % 1024 == 0 ? 1_048_576 : 2048))
            return "memory-backend-file,id=\(id),size=\(size)M,mem-path=/run/hugepages/kvm/\(pageKiB)kB,share=on,prealloc=yes"
        }
        var nodes: [Int] = []
        if numa {
            var custom = 0
            for index in 0..<8 {
                guard let value = conf["numa\(index)"] else { continue }
                let property = PropertyString(parsing: value)
                guard let size = property["memory"].flatMap(Int.init) else { throw Failure("missing NUMA node\(index) memory value") }
                guard let cpus = property["cpus"] else { throw Failure("missing NUMA node\(index) cpus") }
                custom += size
                var object = memoryObject("ram-node\(index)", size)
                if let hostnodes = property["hostnodes"] {
                    guard let policy = property["policy"] else { throw Failure("you need to define a policy for hostnode \(hostnodes)") }
                    object += ",host-nodes=\(hostnodes.replacingOccurrences(of: ";", with: ",")),policy=\(policy)"
                } else if hugepages != nil {
                    throw Failure("numa hostnodes need to be defined to use hugepages")
                }
                cmd += ["-object", object, "-numa",
                        "node,nodeid=\(index),cpus=\(cpus.split(separator: ";").joined(separator: ",cpus=")),memdev=ram-node\(index)"]
                nodes.append(index)
            }
            if custom > 0 && custom != staticMemory { throw Failure("total memory for NUMA nodes must be equal to vm static memory") }
            if custom == 0 {
                for index in 0..<sockets {
                    var cpus = String(cores * index)
                    if cores > 1 { cpus += "-\(cores * index + cores - 1)" }
                    cmd += ["-object", memoryObject("ram-node\(index)", staticMemory / sockets),
                            "-numa", "node,nodeid=\(index),cpus=\(cpus),memdev=ram-node\(index)"]
                }
                nodes = Array(0..<sockets)
            }
        }
        if hotplug && staticMemory < memory {
            var size = hugepages == "1024" ? 1024 : 512
            var current = staticMemory
            var dimm = 0
            outer: for _ in 0..<8 {
                for slot in 0..<32 {
                    current += size
                    let node = nodes.isEmpty ? 0 : nodes[slot % nodes.count]
                    cmd += ["-object", memoryObject("mem-dimm\(dimm)", size), "-device", "pc-dimm,id=dimm\(dimm),memdev=mem-dimm\(dimm),node=\(node)"]
                    dimm += 1
                    if current >= memory { break outer }
                }
                size *= 2
            }
        }
        return cmd
    }

    /// The most memory hotplug may reach: half the guest's physical address space, at most 4 TiB.
    var maxMemoryMiB: Int {
        let cpu = PropertyString(parsing: conf["cpu"] ?? "")
        let hostBits = 46
        var bits: Int
        if let value = cpu["phys-bits"], let number = Int(value) {
            bits = number
        } else if cpu["phys-bits"] == "host" || ["host", "max"].contains(cpu["cputype"] ?? cpu.bareValue ?? "") {
            bits = hostBits
        } else {
            bits = min(hostBits, 40)
        }
        bits &= ~1
        return min(1 << (bits - 21), 4 * 1024 * 1024)
    }

    var memoryMiB: Int {
        let property = PropertyString(parsing: conf["memory"] ?? "")
        return Int(property["current"] ?? property.bareValue ?? "") ?? 512
    }

    /// CPU vendors of QEMU's named models (for `vendor=`); kvm64, qemu64,
    /// host and max have none.
    static let cpuVendors: [String: String] = {
        var map: [String: String] = [:]
        for model in ["486", "pentium", "pentium2", "pentium3", "coreduo", "core2duo", "Conroe", "Penryn", "Nehalem", "Nehalem-IBRS",
                      "Westmere", "Westmere-IBRS", "SandyBridge", "SandyBridge-IBRS", "IvyBridge", "IvyBridge-IBRS", "Haswell",
                      "Haswell-IBRS", "Haswell-noTSX", "Haswell-noTSX-IBRS", "Broadwell", "Broadwell-IBRS", "Broadwell-noTSX",
                      "Broadwell-noTSX-IBRS", "Skylake-Client", "Skylake-Client-IBRS", "Skylake-Client-noTSX-IBRS", "Skylake-Client-v4",
                      "Skylake-Server", "Skylake-Server-IBRS", "Skylake-Server-noTSX-IBRS", "Skylake-Server-v4", "Skylake-Server-v5",
                      "Cascadelake-Server", "Cascadelake-Server-v2", "Cascadelake-Server-noTSX", "Cascadelake-Server-v4",
                      "Cascadelake-Server-v5", "Cooperlake", "Cooperlake-v2", "KnightsMill", "Icelake-Server", "Icelake-Server-noTSX",
                      "Icelake-Server-v3", "Icelake-Server-v4", "Icelake-Server-v5", "Icelake-Server-v6", "SapphireRapids",
                      "SapphireRapids-v2", "SapphireRapids-v3", "GraniteRapids", "GraniteRapids-v2", "SierraForest"] {
            map[model] = "GenuineIntel"
        }
        for model in ["athlon", "phenom", "Opteron_G1", "Opteron_G2", "Opteron_G3", "Opteron_G4", "Opteron_G5", "EPYC", "EPYC-IBPB",
                      "EPYC-v3", "EPYC-v4", "EPYC-Rome", "EPYC-Rome-v2", "EPYC-Rome-v3", "EPYC-Rome-v4", "EPYC-Milan", "EPYC-Milan-v2",
                      "EPYC-Genoa", "EPYC-Turin"] {
            map[model] = "AuthenticAMD"
        }
        return map
    }()

    static let deprecatedCPUModels = ["Icelake-Client": "Icelake-Server", "Icelake-Client-noTSX": "Icelake-Server-noTSX"]

    /// The x86-64 micro-architecture levels are CPU models of Proxmox's QEMU;
    /// stock QEMU (7.2 here) has none of them, so they are spelled out on
    /// qemu64 with the level's features (x86-64 psABI levels v2 to v4).
    static let levelModels: [String: [String]] = {
        let v2 = ["cx16", "lahf_lm", "pni", "popcnt", "sse4.1", "sse4.2", "ssse3"]
        let v3 = v2 + ["abm", "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe", "xsave"]
        let v4 = v3 + ["avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512vl"]
        return ["x86-64-v2": v2, "x86-64-v2-AES": v2 + ["aes"], "x86-64-v3": v3, "x86-64-v4": v4]
    }()

    struct CPUFlag {
        var op: String
        var value: String?
        var reason: String = "unknown origin"

        var quoted: String { "'\(op)" + "\(name)" + (value.map { "=\($0)" } ?? "") + "'" }
        var name = ""
    }

    /// `+aes;-kvm_pv_unhalt` → flags by name.
    static func flagList(_ text: String?, reason: String = "manually set for VM") -> [(String, CPUFlag)] {
        (text ?? "").split(separator: ";").compactMap { item in
            guard let first = item.first, first == "+" || first == "-" else { return nil }
            return (String(item.dropFirst()), CPUFlag(op: String(first), value: nil, reason: reason))
        }
    }

    /// QEMU's -cpu argument: the model (custom models resolved through
    /// cpu-models.conf), then every flag from PVE's defaults, Hyper-V
    /// enlightenments for Windows, the model and the VM, sorted by name.
    func cpuArgument(kvm: Bool, winversion: Int, machineAtLeast: (Int, Int, Int) -> Bool, requiredPVE: inout Int,
                     warnings: inout [String]) throws -> String {
        var cputype = arch == "aarch64" ? (kvm ? "host" : "max") : (kvm ? "kvm64" : "qemu64")
        let cpu = PropertyString(parsing: conf["cpu"] ?? "")
        var custom: SectionConfigFile.Section?
        var hidden = false
        var hvVendor: String?
        var levelFeatures: [(String, CPUFlag)] = []
        if conf["cpu"] != nil {
            cputype = cpu["cputype"] ?? cpu.bareValue ?? cputype
            if cputype.hasPrefix("custom-") {
                let name = String(cputype.dropFirst(7))
                guard let model = cpuModels?[name] else { throw Failure("Custom cputype '\(name)' not found") }
                custom = model
                cputype = Self.property(model, "reported-model") ?? "kvm64"
                if let value = Self.property(model, "hidden") { hidden = Self.boolean(value) == true }
                hvVendor = Self.property(model, "hv-vendor-id")
            }
            if let replacement = Self.deprecatedCPUModels[cputype] { cputype = replacement }
            if !host.proxmoxQEMU, let features = Self.levelModels[cputype] {
                levelFeatures = features.map { ($0, CPUFlag(op: "+", reason: "\(cputype) on a QEMU without that model")) }
                cputype = "qemu64"
            }
            if let value = cpu["hidden"] { hidden = Self.boolean(value) == true }
            if let value = cpu["hv-vendor-id"] { hvVendor = value }
        }
        var flags: [String: CPUFlag] = [:]
        // Later sources win; a change of sign or value is warned about, as upstream does.
        func apply(_ list: [(String, CPUFlag)]) {
            for (name, incoming) in list {
                var flag = incoming
                flag.name = name
                if var old = flags[name] {
                    if old.op == flag.op && old.value == flag.value {
                        old.reason += " & \(flag.reason)"
                        flags[name] = old
                        continue
                    }
                    warnings.append("warning: CPU flag/setting \(flag.quoted) (\(flag.reason)) overwrites \(old.quoted) (\(old.reason))")
                }
                flags[name] = flag
            }
        }

        var pve: [(String, CPUFlag)] = []
        if cputype == "kvm64" && arch == "x86_64" { pve.append(("lahf_lm", CPUFlag(op: "+", reason: "set by PVE; to support Windows 8.1+"))) }
        if conf["ostype"] == "solaris" { pve.append(("x2apic", CPUFlag(op: "-", reason: "set by PVE; incompatible with Solaris"))) }
        if cputype == "kvm64" || cputype == "kvm32" {
            pve.append(("sep", CPUFlag(op: "+", reason: "set by PVE; to support Windows 8+ and improve Windows XP+")))
        }
        if cputype.hasPrefix("Opteron") { pve.append(("rdtscp", CPUFlag(op: "-", reason: "set by PVE; broken on AMD Opteron"))) }
        if machineAtLeast(2, 3, 0) && kvm && arch == "x86_64" {
            pve.append(("kvm_pv_unhalt", CPUFlag(op: "+", reason: "set by PVE; to improve Linux guest spinlock performance")))
            pve.append(("kvm_pv_eoi", CPUFlag(op: "+", reason: "set by PVE; to improve Linux guest interrupt performance")))
        }
        if winversion >= 11 && kvm && arch == "x86_64" {
            // Windows 11 turns on CET shadow stacks that KVM cannot virtualise reliably.
            pve.append(("cet-ibt", CPUFlag(op: "-")))
            pve.append(("cet-ss", CPUFlag(op: "-")))
        }
        apply(levelFeatures)
        apply(pve)

        if kvm && winversion >= 6 && !(conf["bios"] == "ovmf" && winversion < 8) {
            var hv: [(String, CPUFlag)] = []
            if let hvVendor { hv.append(("hv_vendor_id", CPUFlag(op: "", value: hvVendor))) }
            if machineAtLeast(2, 3, 0) {
                hv += [("hv_spinlocks", CPUFlag(op: "", value: "0x1fff")), ("hv_vapic", CPUFlag(op: "")), ("hv_time", CPUFlag(op: ""))]
            } else {
                hv.append(("hv_spinlocks", CPUFlag(op: "", value: "0xffff")))
            }
            if machineAtLeast(2, 6, 0) { hv += [("hv_reset", CPUFlag(op: "")), ("hv_vpindex", CPUFlag(op: "")), ("hv_runtime", CPUFlag(op: ""))] }
            if winversion >= 7 {
                hv.append(("hv_relaxed", CPUFlag(op: "")))
                if machineAtLeast(2, 12, 0) { hv += [("hv_synic", CPUFlag(op: "")), ("hv_stimer", CPUFlag(op: ""))] }
                if machineAtLeast(3, 1, 0) { hv.append(("hv_ipi", CPUFlag(op: ""))) }
            }
            if winversion >= 11 && cputype == "host" && host.cpuVendor == "GenuineIntel" && machineAtLeast(11, 0, 2) {
                hv.append(("hv_evmcs", CPUFlag(op: "")))
                requiredPVE = max(requiredPVE, 2)
            } else if winversion >= 11 && cputype == "host" && host.cpuVendor == "GenuineIntel" {
                // Before enlightened VMCS (11.0+pve2), Windows 11 on an Intel host CPU
                // gets mode-based execution control hidden.
                hv.append(("vmx-mbec", CPUFlag(op: "-")))
            }
            apply(hv)
        }
        apply(Self.flagList(custom.flatMap { Self.property($0, "flags") }, reason: "set by custom CPU model"))
        apply(Self.flagList(cpu["flags"]))
        if cputype != "host" && kvm && arch == "x86_64" { flags["enforce"] = CPUFlag(op: "") }
        if hidden { flags["kvm"] = CPUFlag(op: "", value: "off") }
        if let vendor = Self.cpuVendors[cputype] { flags["vendor"] = CPUFlag(op: "", value: vendor) }

        var text = cputype
        if let level = cpu["level"] { text += ",level=\(level)" }
        for name in flags.keys.sorted() {
            let flag = flags[name]!
            text += ",\(flag.op)\(name)" + (flag.value.map { "=\($0)" } ?? "")
        }
        for option in ["guest-phys-bits", "phys-bits"] {
            var suffix = ""
            for value in [custom.flatMap { Self.property($0, option) }, cpu[option]] {
                guard let value, !value.isEmpty else { continue }
                suffix = value == "host" ? ",host-phys-bits=true" : ",\(option)=\(value)"
            }
            text += suffix
        }
        return text
    }

    struct VGA {
        var type: String
        var memory: Int?
        var qxl: Int
        var clipboard: String?
    }

    func vgaProperties(winversion: Int, machineAtLeast: (Int, Int, Int) -> Bool) -> VGA {
        let property = PropertyString(parsing: conf["vga"] ?? "")
        var type = property["type"] ?? property.bareValue
        var qxl = 0
        if let value = type, value.hasPrefix("qxl") {
            qxl = Int(value.dropFirst(3)) ?? 1
            type = "qxl"
        }
        if type == nil {
            if arch == "aarch64" {
                type = "virtio"
            } else if machineAtLeast(2, 9, 0) {
                type = (winversion == 0 || winversion >= 6) ? "std" : "cirrus"
            } else {
                type = winversion >= 6 ? "std" : "cirrus"
            }
        }
        return VGA(type: type!, memory: property["memory"].flatMap { Int($0) }, qxl: qxl, clipboard: property["clipboard"])
    }

    func vgaDevice(_ vga: VGA, winversion: Int, q35: Bool, bridges: inout Set<Int>, machineAtLeast: (Int, Int, Int) -> Bool,
                   id: Int? = nil) throws -> String {
        let map = ["cirrus": "cirrus-vga", "std": "VGA", "vmware": "vmware-svga", "virtio": "virtio-vga", "virtio-gl": "virtio-vga-gl"]
        var type = map[vga.type]
        if arch == "aarch64" && type == "virtio-vga" { type = "virtio-gpu" }
        var maxOutputs = ""
        if vga.qxl > 0 {
            type = id == nil ? "qxl-vga" : "qxl"
            if conf["ostype"] == nil || conf["ostype"]!.range(of: #"^(?:l\d\d)|(?:other)$"#, options: .regularExpression) != nil {
                if machineAtLeast(4, 1, 0) { maxOutputs = ",max_outputs=4" }
            }
        }
        guard let type else { throw Failure("no device-type for \(vga.type)") }
        var memory = ""
        if let mb = vga.memory {
            if vga.type.hasPrefix("virtio") {
                memory = ",max_hostmem=\(mb * 1024 * 1024)"
            } else if vga.qxl > 0 {
                memory = ",vgamem_mb=\(mb),ram_size_mb=\(mb * 4),vram_size_mb=\(mb * 2)"
            } else {
                memory = ",vgamem_mb=\(mb)"
            }
        } else if vga.qxl > 0 && id != nil {
            memory = ",ram_size=67108864,vram_size=33554432"
        }
        var edid = ""
        if type == "VGA" && winversion > 0 && conf["bios"] != "ovmf" { edid = ",edid=off" }
        let vgaID = "vga" + (id.map(String.init) ?? "")
        let address = q35 && id == nil ? ",bus=pcie.0,addr=0x1" : Self.pciAddress(vgaID, bridges: &bridges)
        return "\(type),id=\(vgaID)\(memory)\(maxOutputs)\(address)\(edid)"
    }

    /// `boot: order=scsi0;ide2;net0` (or the legacy `boot: cdn` + `bootdisk`) as bootindex per device.
    /// Legacy letters take the hundreds by position (c: the boot disk, counted
    /// among all disks; d: every CD-ROM; n: every NIC); an empty `boot:` boots nothing.
    func bootOrder() throws -> [String: Int] {
        var order: [String: Int] = [:]
        let raw = conf["boot"]
        let property = PropertyString(parsing: raw ?? "")
        if let list = property["order"] {
            for (position, device) in list.split(separator: ";").enumerated() { order[String(device)] = 100 + position }
            return order
        }
        if let raw, raw.trimmingCharacters(in: .whitespaces).isEmpty { return [:] }
        let legacy = property["legacy"] ?? property.bareValue ?? "cdn"
        for (position, letter) in legacy.enumerated() {
            let base = (position + 1) * 100
            var counter = 0
            switch letter {
            case "c":
                for key in Self.driveKeys {
                    guard let value = conf[key], let drive = Drive(key: key, value: value), !drive.isCDROM else { continue }
                    if key == conf["bootdisk"] { order[key] = base + counter }
                    counter += 1
                }
            case "d":
                for key in Self.driveKeys {
                    guard let value = conf[key], let drive = Drive(key: key, value: value), drive.isCDROM else { continue }
                    order[key] = base + counter
                    counter += 1
                }
            case "n":
                for net in 0..<32 where conf["net\(net)"] != nil {
                    order["net\(net)"] = base + counter
                    counter += 1
                }
            default:
                break
            }
        }
        return order
    }

    // MARK: USB

    func usbControllers(q35: Bool, qemuXHCI: Bool, bridges: inout Set<Int>) throws -> [String] {
        var devices: [String] = []
        if arch == "aarch64" {
            devices += ["-device", "usb-ehci,id=ehci\(Self.pciAddress("ehci", bridges: &bridges))"]
        } else if !q35 {
            devices += ["-device", "piix3-usb-uhci,id=uhci\(Self.pciAddress("piix3", bridges: &bridges)).0x2"]
        }
        var usb2 = false, usb3 = false, any = false
        for index in 0..<14 {
            guard let value = conf["usb\(index)"] else { continue }
            if index >= 5 && !qemuXHCI { throw Failure("using usb\(index) is only possible with machine type >= 7.1 and ostype l26 or windows > 7") }
            any = true
            if Self.boolean(PropertyString(parsing: value)["usb3"]) == true { usb3 = true } else { usb2 = true }
        }
        if !qemuXHCI && !q35 && usb2 && arch != "aarch64" {
            devices += ["-readconfig", host.machineConfigDirectory + "/pve-usb.cfg"]
        }
        var scratch = bridges
        let address = Self.pciAddress("xhci", bridges: &scratch)
        if qemuXHCI && any {
            bridges = scratch
            devices += ["-device", "qemu-xhci,p2=15,p3=15,id=xhci\(address)"]
        } else if usb3 {
            bridges = scratch
            devices += ["-device", "nec-usb-xhci,id=xhci\(address)"]
        }
        return devices
    }

    func usbDevices(qemuXHCI: Bool, spiceUSB3: Bool, bootOrder: [String: Int]) throws -> [String] {
        var devices: [String] = []
        for index in 0..<14 {
            guard let value = conf["usb\(index)"] else { continue }
            if index >= 5 && !qemuXHCI { throw Failure("using usb\(index) is only possible with machine type >= 7.1 and ostype l26 or windows > 7") }
            let property = PropertyString(parsing: value)
            let port = qemuXHCI ? index + 1 : nil
            let usb3 = Self.boolean(property["usb3"]) == true
            let hostValue = property["host"] ?? property.bareValue ?? ""
            if hostValue.lowercased() == "spice" {
                let bus = (usb3 && spiceUSB3) || qemuXHCI ? "xhci" : "ehci"
                devices += ["-chardev", "spicevmc,id=usbredirchardev\(index),name=usbredir",
                            "-device", "usb-redir,chardev=usbredirchardev\(index),id=usbredirdev\(index),bus=\(bus).0"
                                + (port.map { ",port=\($0)" } ?? "")]
                continue
            }
            var device = "usb-host"
            if usb3 || port != nil {
                device += ",bus=xhci.0" + (port.map { ",port=\($0)" } ?? "")
            }
            let parts = hostValue.split(separator: ":")
            if parts.count == 2, parts.allSatisfy({ $0.replacingOccurrences(of: "0x", with: "").count == 4 }) {
                let vendor = parts[0].replacingOccurrences(of: "0x", with: "")
                let product = parts[1].replacingOccurrences(of: "0x", with: "")
                device += ",vendorid=0x\(vendor),productid=0x\(product)"
            } else if let dash = hostValue.firstIndex(of: "-") {
                device += ",hostbus=\(hostValue[..<dash]),hostport=\(hostValue[hostValue.index(after: dash)...])"
            } else {
                throw Failure("no usb id or path given")
            }
            device += ",id=usb\(index)"
            if let boot = bootOrder["usb\(index)"] { device += ",bootindex=\(boot)" }
            devices += ["-device", device]
        }
        return devices
    }

    /// qemu-server's scsihw_infos: devices per controller and the controller's id prefix.
    static func scsiLayout(_ scsihw: String?) -> (maxdev: Int, prefix: String) {
        scsihw == "virtio-scsi-single" ? (1, "virtioscsi") : ((scsihw ?? "lsi").hasPrefix("lsi") ? 7 : 256, "scsihw")
    }

    /// The sysfs path of a mediated device qemu-server creates for hostpciN.
    func mdevPath(_ index: Int) -> String {
        "/sys/bus/mdev/devices/" + String(format: "%08d-0000-0000-0000-%012d", index, vmid)
    }

    // MARK: PCI passthrough

    /// `hostpciN: [host=]bus:dev[.fn][;...][,pcie=1][,rombar=0][,romfile=..][,x-vga=1][,mdev=..][,mapping=..]`.
    func hostPCIDevices(q35: Bool, bridges: inout Set<Int>, bootOrder: [String: Int]) throws -> [String] {
        var devices: [String] = []
        var usedPaths: Set<String> = []
        for index in 0..<16 {
            guard let value = conf["hostpci\(index)"] else { continue }
            let property = PropertyString(parsing: value)
            var functions: [String] = []
            var sysfs: String?
            if let mapping = property["mapping"] {
                guard let entry = host.pciMappings[mapping], !entry.paths.isEmpty else {
                    throw Failure("PCI device mapping not found for '\(mapping)'")
                }
                if property["mdev"] != nil && entry.mdev {
                    sysfs = mdevPath(index)
                } else {
                    guard let free = entry.paths.first(where: { !usedPaths.contains($0) }) else {
                        throw Failure("could not find a free device for mapping '\(mapping)'")
                    }
                    functions = [free]
                }
            } else {
                guard let hostValue = property["host"] ?? property.bareValue else { throw Failure("hostpci\(index): no host device") }
                for id in hostValue.split(separator: ";").map(String.init) {
                    var full = id.split(separator: ":").count == 2 ? "0000:" + id : id
                    if full.contains(".") {
                        functions.append(full)
                    } else {
                        full += "."
                        let found = host.pciDevices.filter { $0.hasPrefix(full) }.sorted()
                        guard !found.isEmpty else { throw Failure("no PCI device found for '\(id)'") }
                        functions += found
                    }
                }
                if property["mdev"] != nil {
                    sysfs = mdevPath(index)
                }
            }
            usedPaths.formUnion(functions)
            let pcie = q35 && Self.boolean(property["pcie"]) == true
            var address: String
            if pcie {
                let bus0 = (conf["ostype"].map { ["win7", "w2k8"].contains($0) } ?? false)
                if bus0 {
                    address = ""
                } else {
                    if index > 3 {
                        let ports = [4: "10.0", 5: "10.1", 6: "10.2", 7: "10.3", 8: "10.4", 9: "10.5", 10: "10.6", 11: "10.7",
                                     12: "11.0", 13: "11.1", 14: "11.2", 15: "11.3"]
                        devices += ["-device", "pcie-root-port,id=ich9-pcie-port-\(index + 1),addr=\(ports[index]!),x-speed=16,x-width=32,multifunction=on,bus=pcie.0,port=\(index + 1),chassis=\(index + 1)"]
                    }
                    address = ",bus=ich9-pcie-port-\(index + 1),addr=0x0"
                }
            } else {
                address = Self.pciAddress("hostpci\(index)", bridges: &bridges)
            }
            var extras = ""
            if property["rombar"].flatMap(Self.boolean) == false { extras += ",rombar=0" }
            if let romfile = property["romfile"] { extras += ",romfile=/usr/share/kvm/\(romfile)" }
            for (key, qemu) in [("vendor-id", "x-pci-vendor-id"), ("device-id", "x-pci-device-id"),
                                ("sub-vendor-id", "x-pci-sub-vendor-id"), ("sub-device-id", "x-pci-sub-device-id")] {
                if let value = property[key] { extras += ",\(qemu)=\(value)" }
            }
            let boot = bootOrder["hostpci\(index)"].map { ",bootindex=\($0)" } ?? ""
            if let sysfs {
                devices += ["-device", "vfio-pci,sysfsdev=\(sysfs),id=hostpci\(index)\(address)\(extras)\(boot)"]
                continue
            }
            let multifunction = functions.count > 1
            for (position, function) in functions.enumerated() {
                var id = "hostpci\(index)"
                var functionAddress = address
                if multifunction {
                    id += ".\(position)"
                    functionAddress += ".\(position)"
                    if position == 0 { functionAddress += ",multifunction=on" }
                }
                var device = "vfio-pci,host=\(function),id=\(id)\(functionAddress)"
                if position == 0 {
                    if Self.boolean(property["x-vga"]) == true { device += ",x-vga=on" }
                    device += extras + boot
                }
                devices += ["-device", device]
            }
        }
        return devices
    }

    // MARK: drives

    static let driveKeys: [String] = (0..<4).map { "ide\($0)" } + (0..<31).map { "scsi\($0)" } + (0..<16).map { "virtio\($0)" }
        + (0..<6).map { "sata\($0)" }

    struct Drive {
        var key: String
        var interface: String
        var index: Int
        var file: String
        var options: [String: String]
        var bootindex: Int?

        init?(key: String, value: String) {
            guard let split = key.firstIndex(where: { $0.isNumber }), let index = Int(key[split...]) else { return nil }
            self.key = key
            interface = String(key[..<split])
            self.index = index
            let property = PropertyString(parsing: value)
            guard let file = property["file"] ?? property["volume"] ?? property.bareValue else { return nil }
            self.file = file
            var options: [String: String] = [:]
            for entry in property.entries { if let key = entry.key { options[key] = entry.value } }
            self.options = options
        }

        var isCDROM: Bool { options["media"] == "cdrom" }
        var iothread: Bool { QemuCommandLine.boolean(options["iothread"]) == true }

        var throttleLimits: [String: CanonicalJSON] {
            var limits: [String: CanonicalJSON] = [:]
            for (suffix, name) in [("", "-total"), ("_rd", "-read"), ("_wr", "-write")] {
                if let value = options["mbps\(suffix)"].flatMap(Double.init) { limits["bps\(name)"] = .number(Int(value * 1024 * 1024)) }
                if let value = options["mbps\(suffix)_max"].flatMap(Double.init) { limits["bps\(name)-max"] = .number(Int(value * 1024 * 1024)) }
                if let value = options["bps\(suffix)_max_length"].flatMap(Int.init) { limits["bps\(name)-max-length"] = .number(value) }
                if let value = options["iops\(suffix)"].flatMap(Int.init) { limits["iops\(name)"] = .number(value) }
                if let value = options["iops\(suffix)_max"].flatMap(Int.init) { limits["iops\(name)-max"] = .number(value) }
                if let value = options["iops\(suffix)_max_length"].flatMap(Int.init) { limits["iops\(name)-max-length"] = .number(value) }
            }
            return limits
        }
    }

    /// Node names as qemu-server derives them, stable across starts.
    static func nodeName(_ prefix: String, drive: String, volume: String, snapshot: String? = nil) -> String {
        let digest = Digest.sha256Hex(Data("drive=\(drive),\(snapshot.map { "snap=\($0)," } ?? "")volid=\(volume)".utf8))
        return prefix + digest.prefix(30)
    }

    func storageSection(_ id: String) -> SectionConfigFile.Section? { storage?[id] }

    static func property(_ section: SectionConfigFile.Section, _ key: String) -> String? {
        section.properties.last { $0.key == key }?.value
    }

    /// The protocol node of a drive (file, host_device, rbd, iscsi, ...), its
    /// format and the storage's config.
    func protocolNode(_ drive: Drive) throws -> (node: [String: CanonicalJSON], format: String, storageType: String?,
                                                 section: SectionConfigFile.Section?) {
        if drive.file.hasPrefix("/") {
            let driver = drive.file.contains("/dev/") ? (drive.isCDROM ? "host_cdrom" : "host_device") : "file"
            return (["driver": .string(driver), "filename": .string(drive.file)], drive.options["format"] ?? "raw", nil, nil)
        }
        if drive.file == "cdrom" {
            return (["driver": .string("host_cdrom"), "filename": .string("/dev/cdrom")], "raw", nil, nil)
        }
        guard let (storageID, volname) = StorageVolumes.parseVolumeID(drive.file) else {
            throw Failure("unable to parse volume ID '\(drive.file)'")
        }
        guard let section = storageSection(storageID) else { throw Failure("storage '\(storageID)' does not exist") }
        let type = section.type
        let volume: StorageVolumes.Volume
        do {
            volume = try StorageVolumes.parseVolname(volname, storageType: type == "zfs" ? "zfspool" : type)
        } catch {
            throw Failure(error.description)
        }
        let content = Set(StorageVolumes.splitList(Self.property(section, "content") ?? ""))
        let wanted = volume.vtype == "iso" ? "iso" : "images"
        if !content.isEmpty && !content.contains(wanted) {
            throw Failure("storage '\(storageID)' does not support content-type '\(wanted)'")
        }
        if volume.vtype == "iso" && drive.options["media"] == nil {
            throw Failure("\(drive.key): explicit media parameter is required for iso images")
        }
        let format = volume.format ?? "raw"
        switch type {
        case "lvm", "lvmthin":
            let vg = Self.property(section, "vgname") ?? ""
            // LVM holds qcow2 images too (for snapshots as volume chains).
            let lvFormat = volume.name.hasSuffix(".qcow2") ? "qcow2" : format
            return (["driver": .string("host_device"), "filename": .string("/dev/\(vg)/\(volume.name)")], lvFormat, type, section)
        case "rbd":
            if Self.boolean(Self.property(section, "krbd")) == true {
                let pool = Self.property(section, "pool") ?? "rbd"
                return (["driver": .string("host_device"),
                         "filename": .string("/dev/rbd-pve/\(Self.property(section, "fsid") ?? "")/\(pool)/\(volume.name)")],
                        format, type, section)
            }
            var node: [String: CanonicalJSON] = ["driver": .string("rbd"), "pool": .string(Self.property(section, "pool") ?? "rbd"),
                                                 "image": .string(volume.name), "auth-client-required": .array([.string("none")])]
            if let monhost = Self.property(section, "monhost") {
                node["server"] = .array(monhost.split(whereSeparator: { $0 == "," || $0 == ";" || $0 == " " }).map {
                    .object(["host": .string(String($0)), "port": .string("3300")])
                })
            }
            return (node, format, type, section)
        case "zfs":
            return (["driver": .string("iscsi"), "transport": .string("tcp"), "portal": .string(Self.property(section, "portal") ?? ""),
                     "target": .string(Self.property(section, "target") ?? ""), "lun": .number(0)], format, type, section)
        default:
            let path = Self.property(section, "path") ?? (["nfs", "cifs", "cephfs", "glusterfs"].contains(type) ? "/mnt/pve/\(storageID)" : "")
            var location: (path: String, vmid: String?, vtype: String)
            do { location = try StorageVolumes.filesystemPath(path: path, volname: volname) } catch { throw Failure(error.description) }
            // btrfs keeps each raw image in its own subvolume: <name without .raw>/disk.raw.
            if type == "btrfs" && volume.format == "raw" {
                if location.path.hasSuffix(".raw") { location.path.removeLast(4) }
                location.path += "/disk.raw"
            }
            return (["driver": .string("file"), "filename": .string(location.path)], format, type, section)
        }
    }

    func blockdev(_ drive: Drive, readOnly: Bool) throws -> CanonicalJSON {
        var (file, format, storageType, section) = try protocolNode(drive)
        let cdrom = drive.isCDROM
        let direct = cacheDirect(drive, storageType: storageType, section: section)
        var cache = CanonicalJSON.object(["direct": .bool(direct), "no-flush": .bool(drive.options["cache"] == "unsafe")])
        if case .string("rbd")? = file["driver"], drive.interface == "efidisk" {
            cache = .object(["direct": .bool(false), "no-flush": .bool(false)])
        }
        file["cache"] = cache
        if case .string(let driver)? = file["driver"], ["file", "host_cdrom", "host_device"].contains(driver) {
            file["aio"] = .string(aio(drive, storageType: storageType, section: section, direct: direct))
        }
        file["node-name"] = .string(Self.nodeName("e", drive: drive.key, volume: drive.file))
        func common(_ node: inout [String: CanonicalJSON]) {
            if !cdrom {
                node["discard"] = .string(drive.options["discard"] == "on" ? "unmap" : "ignore")
                node["detect-zeroes"] = .string(detectZeroes(drive))
            }
            node["read-only"] = .bool(Self.boolean(drive.options["ro"]) == true || cdrom || readOnly)
        }
        common(&file)
        var formatNode: [String: CanonicalJSON] = ["node-name": .string(Self.nodeName("f", drive: drive.key, volume: drive.file)),
                                                   "driver": .string(format), "file": .object(file), "cache": cache]
        let volumeChain = section.flatMap { Self.property($0, "snapshot-as-volume-chain") }.flatMap(Self.boolean) == true
        if volumeChain && format == "qcow2" { formatNode["discard-no-unref"] = .bool(true) }
        // External snapshots (a volume-chain storage, or qcow2 on LVM): each
        // snapshot is a qcow2 file the live image is layered on.
        let layered = volumeChain || (storageType == "lvm" && format == "qcow2")
        if layered, let chain = host.snapshotChains[drive.file], var parent = chain["current"]?.parent {
            var layers: [(name: String, file: String)] = []
            while let snapshot = chain[parent] {
                layers.append((parent, snapshot.file))
                guard let next = snapshot.parent else { break }
                parent = next
            }
            var backing: [String: CanonicalJSON]?
            for layer in layers.reversed() {
                var layerFile = file
                layerFile["filename"] = .string(layer.file)
                layerFile["node-name"] = .string(Self.nodeName("e", drive: drive.key, volume: drive.file, snapshot: layer.name))
                var layerFormat: [String: CanonicalJSON] = [
                    "node-name": .string(Self.nodeName("f", drive: drive.key, volume: drive.file, snapshot: layer.name)),
                    "driver": .string(format), "file": .object(layerFile), "cache": cache]
                if volumeChain { layerFormat["discard-no-unref"] = .bool(true) }
                if let below = backing { layerFormat["backing"] = .object(below) }
                common(&layerFormat)
                backing = layerFormat
            }
            if let backing { formatNode["backing"] = .object(backing) }
        }
        if drive.interface == "efidisk" && format == "raw" {
            formatNode["size"] = .number(drive.options["efitype"] == "4m" ? 540_672 : 131_072)
        }
        common(&formatNode)
        if isSCSIBlock(drive) {
            formatNode["node-name"] = .string("drive-\(drive.key)")
            return .object(formatNode)
        }
        var top: [String: CanonicalJSON] = ["driver": .string("throttle"), "node-name": .string("drive-\(drive.key)"),
                                            "throttle-group": .string("throttle-drive-\(drive.key)"), "file": .object(formatNode)]
        common(&top)
        return .object(top)
    }

    func isSCSIBlock(_ drive: Drive) -> Bool {
        drive.interface == "scsi" && drive.file.hasPrefix("/dev/") && !drive.isCDROM && QemuCommandLine.boolean(drive.options["scsiblock"]) == true
    }

    /// The `-drive` of machines before 10.0 (qemu-server's print_drive_commandline_full).
    func legacyDrive(_ drive: Drive) throws -> String {
        var path = ""
        var format: String?
        var storageType: String?
        var section: SectionConfigFile.Section?
        if drive.isCDROM && drive.file == "none" {
            path = ""
        } else if drive.isCDROM && drive.file == "cdrom" {
            path = "/dev/cdrom"
            format = "raw"
        } else {
            let node = try protocolNode(drive)
            if case .string(let filename)? = node.node["filename"] { path = filename }
            format = node.format
            storageType = node.storageType
            section = node.section
        }
        var options = ""
        for key in ["media", "cache", "rerror", "werror", "discard"] { if let value = drive.options[key] { options += ",\(key)=\(value)" } }
        if let snapshot = drive.options["snapshot"] { options += ",snapshot=\(QemuCommandLine.boolean(snapshot) == true ? "on" : "off")" }
        if let ro = drive.options["ro"] { options += ",readonly=\(QemuCommandLine.boolean(ro) == true ? "on" : "off")" }
        if let format { options += ",format=\(format)" }
        let direct = cacheDirect(drive, storageType: storageType, section: section)
        if drive.options["cache"] == nil && direct { options += ",cache=none" }
        options += ",aio=\(aio(drive, storageType: storageType, section: section, direct: direct))"
        if !drive.isCDROM { options += ",detect-zeroes=\(detectZeroes(drive))" }
        return (path.isEmpty ? "" : "file=\(path),") + "if=none,id=drive-\(drive.key)" + options
    }

    func cacheDirect(_ drive: Drive, storageType: String?, section: SectionConfigFile.Section?) -> Bool {
        if let cache = drive.options["cache"] { return ["off", "none", "directsync"].contains(cache) }
        if drive.interface == "efidisk" { return false }
        return !drive.isCDROM && !(storageType == "btrfs" && Self.boolean(section.flatMap { Self.property($0, "nocow") }) != true)
    }

    func aio(_ drive: Drive, storageType: String?, section: SectionConfigFile.Section?, direct: Bool) -> String {
        if let explicit = drive.options["aio"] { return explicit }
        let krbd = storageType == "rbd" && Self.boolean(section.flatMap { Self.property($0, "krbd") }) == true
        if storageType == "lvm" || storageType == "cifs" || (krbd && !direct) { return direct ? "native" : "threads" }
        return "io_uring"
    }

    func detectZeroes(_ drive: Drive) -> String {
        if let value = drive.options["detect_zeroes"], Self.boolean(value) == false { return "off" }
        return drive.options["discard"] == "on" ? "unmap" : "on"
    }

    func driveDevice(_ drive: Drive, scsihw: String?, q35: Bool, bridges: inout Set<Int>, blockdevEra: Bool = true) throws -> String {
        var device: String
        var hasWriteCache = true
        switch drive.interface {
        case "virtio":
            device = "virtio-blk-pci"
            if drive.file != "none" || !blockdevEra { device += ",drive=drive-\(drive.key)" }
            device += ",id=\(drive.key)\(Self.pciAddress(drive.key, bridges: &bridges))"
            if drive.iothread { device += ",iothread=iothread-\(drive.key)" }
        case "scsi":
            let (maxdev, prefix) = Self.scsiLayout(scsihw)
            let controller = drive.index / maxdev
            let unit = drive.index % maxdev
            // scsi-block and scsi-generic need a SCSI INQUIRY of the host device, which
            // is not done here: such devices are presented as scsi-hd (as upstream does
            // when the inquiry fails).
            let type = drive.isCDROM ? "cd" : "hd"
            if scsihw == nil || scsihw!.hasPrefix("lsi") || scsihw == "pvscsi" {
                device = "scsi-\(type),bus=\(prefix)\(controller).0,scsi-id=\(unit)"
            } else {
                device = "scsi-\(type),bus=\(prefix)\(controller).0,channel=0,scsi-id=0,lun=\(drive.index)"
            }
            if drive.file != "none" || !blockdevEra { device += ",drive=drive-\(drive.key)" }
            device += ",id=\(drive.key)"
            if blockdevEra && (type == "cd" || type == "hd") { device += ",device_id=drive-\(drive.key)" }
            if QemuCommandLine.boolean(drive.options["ssd"]) == true && (type == "block" || type == "hd") { device += ",rotation_rate=1" }
            if let wwn = drive.options["wwn"] { device += ",wwn=\(wwn)" }
            if type == "hd" || type == "cd" {
                if let vendor = drive.options["vendor"] { device += ",vendor=\(vendor)" }
                if let product = drive.options["product"] { device += ",product=\(product)" }
            } else {
                hasWriteCache = false
            }
        case "ide", "sata":
            let maxdev = drive.interface == "sata" ? 6 : 2
            var controller = drive.index / maxdev
            var unit = drive.index % maxdev
            if q35 && drive.interface == "ide" {
                controller += 2 * (unit % 2)
                unit = 0
            }
            var type = drive.isCDROM ? "cd" : "hd"
            if templateSource { type = "cd" }
            device = "ide-\(type)" + (drive.interface == "ide" ? ",bus=ide.\(controller),unit=\(unit)" : ",bus=ahci\(controller).\(unit)")
            if drive.file != "none" || !blockdevEra { device += ",drive=drive-\(drive.key)" }
            device += ",id=\(drive.key)"
            if type == "hd" {
                if let model = drive.options["model"] { device += ",model=\(model.removingPercentEncoding ?? model)" }
                if QemuCommandLine.boolean(drive.options["ssd"]) == true { device += ",rotation_rate=1" }
            }
            if let wwn = drive.options["wwn"] { device += ",wwn=\(wwn)" }
        default:
            throw Failure("unsupported interface type")
        }
        if let bootindex = drive.bootindex { device += ",bootindex=\(bootindex)" }
        if let serial = drive.options["serial"] { device += ",serial=\(serial.removingPercentEncoding ?? serial)" }
        if blockdevEra {
            if !drive.isCDROM && hasWriteCache {
                let cache = drive.options["cache"]
                device += ",write-cache=\(cache == "writethrough" || cache == "directsync" ? "off" : "on")"
            }
            for option in ["rerror", "werror"] { if let value = drive.options[option] { device += ",\(option)=\(value)" } }
        }
        return device
    }

    // MARK: NICs

    struct NIC {
        var index: Int
        var model: String
        var mac: String
        var bridge: String?
        var options: [String: String]

        static let models = ["e1000", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e", "i82551", "i82557b", "i82559er",
                             "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3"]

        init(index: Int, value: String) throws {
            self.index = index
            let property = PropertyString(parsing: value)
            var options: [String: String] = [:]
            var model: String?
            var mac: String?
            for entry in property.entries {
                guard let key = entry.key else { continue }
                if NIC.models.contains(key) {
                    model = key
                    mac = entry.value
                } else {
                    options[key] = entry.value
                }
            }
            if model == nil, let explicit = options["model"] { model = explicit; mac = options["macaddr"] }
            guard let model else { throw Failure("net\(index): no NIC model") }
            self.model = model
            self.mac = mac ?? options["macaddr"] ?? ""
            self.bridge = options["bridge"]
            self.options = options
        }
    }

    func netdev(_ net: NIC, native: Bool) -> String {
        let id = "net\(net.index)"
        var text: String
        if net.bridge != nil {
            let vhost = native && host.vhostNet && net.model == "virtio" ? ",vhost=on" : ""
            let scripts = host.bridgeScripts
                ? "script=/usr/libexec/qemu-server/pve-bridge,downscript=/usr/libexec/qemu-server/pve-bridgedown"
                : "script=no,downscript=no"
            text = "type=tap,id=\(id),ifname=tap\(vmid)i\(net.index),\(scripts)\(vhost)"
        } else {
            text = "type=user,id=\(id),hostname=\(conf["name"] ?? "vm\(vmid)")"
        }
        if let queues = net.options["queues"], net.model == "virtio" { text += ",queues=\(queues)" }
        return text
    }

    func netDevice(_ net: NIC, bootindex: Int?, bridges: inout Set<Int>, machineAtLeast: (Int, Int, Int) -> Bool,
                   oldBIOSFiles: Bool = false) throws -> String {
        let id = "net\(net.index)"
        let device = net.model == "virtio" ? "virtio-net-pci" : net.model
        var text = "\(device),mac=\(net.mac),netdev=\(id)\(Self.pciAddress(id, bridges: &bridges)),id=\(id)"
        if let queues = net.options["queues"].flatMap(Int.init), queues > 1, net.model == "virtio" {
            text += ",vectors=\(queues * 2 + 2),mq=on"
            if machineAtLeast(7, 1, 0) { text += ",packed=on" }
        }
        if machineAtLeast(7, 1, 0) && net.model == "virtio" { text += ",rx_queue_size=1024,tx_queue_size=256" }
        if let bootindex { text += ",bootindex=\(bootindex)" }
        if net.model == "virtio", let bridge = net.bridge {
            let bridgeMTU = host.bridgeMTU[bridge] ?? 1500
            var mtu = net.options["mtu"].flatMap(Int.init) ?? bridgeMTU
            if mtu == 1 { mtu = bridgeMTU }
            if mtu < 576 { throw Failure("netdev \(id): MTU '\(mtu)' is smaller than the IP minimum MTU '576'") }
            if mtu > bridgeMTU { throw Failure("netdev \(id): MTU '\(mtu)' is bigger than the bridge MTU '\(bridgeMTU)'") }
            if mtu != 1500 || machineAtLeast(11, 0, 0) { text += ",host_mtu=\(mtu)" }
            if machineAtLeast(11, 0, 0) { text += ",host_tunnel=off" }
        }
        if oldBIOSFiles {
            let roms = ["virtio-net-pci": "pxe-virtio.rom", "e1000": "pxe-e1000.rom", "e1000e": "pxe-e1000e.rom", "ne2k": "pxe-ne2k_pci.rom",
                        "pcnet": "pxe-pcnet.rom", "rtl8139": "pxe-rtl8139.rom"]
            if let rom = roms[device] { text += ",romfile=\(rom)" }
        }
        return text
    }

    // MARK: OVMF

    func ovmfArguments(q35: Bool, machineAtLeast: (Int, Int, Int) -> Bool) throws -> ([String], [String]) {
        var cmd: [String] = []
        var efidisk = conf["efidisk0"].flatMap { Drive(key: "efidisk0", value: $0) }
        efidisk?.interface = "efidisk"
        let fourMB = efidisk?.options["efitype"] == "4m"
        let sevType = conf["amd-sev"].map { PropertyString(parsing: $0) }.map { $0["type"] ?? $0.bareValue ?? "std" }
        if sevType == "snp" {
            // SEV-SNP boots a stateless firmware: no pflash, no EFI vars.
            return (["-bios", "/usr/share/pve-edk2-firmware//OVMF_SEV_4M.fd"], [])
        }
        let codeFile: String
        if arch == "aarch64" {
            codeFile = "AAVMF_CODE.fd"
        } else if sevType != nil {
            codeFile = "OVMF_SEV_CODE_4M.fd"
        } else if fourMB && q35 && Self.boolean(efidisk?.options["pre-enrolled-keys"]) == true {
            // Secure Boot needs SMM, which only the q35 firmware build enables.
            codeFile = "OVMF_CODE_4M.secboot.fd"
        } else {
            codeFile = fourMB ? "OVMF_CODE_4M.fd" : "OVMF_CODE.fd"
        }
        let code = "/usr/share/pve-edk2-firmware//" + codeFile
        if !machineAtLeast(10, 0, 0) {
            cmd += ["-drive", "if=pflash,unit=0,format=raw,readonly=on,file=\(code)"]
            guard let efidisk else { return (cmd, []) }
            let node = try protocolNode(efidisk)
            guard case .string(let path)? = node.node["filename"] else { return (cmd, []) }
            cmd += ["-drive", "if=pflash,unit=1,id=drive-efidisk0,format=\(node.format),file=\(path)"]
            return (cmd, [])
        }
        cmd += ["-object", CanonicalJSON.object(["id": .string("throttle-drive-efidisk0"), "limits": .object([:]),
                                                 "qom-type": .string("throttle-group")]).text]
        cmd += ["-blockdev", CanonicalJSON.object(["driver": .string("raw"), "node-name": .string("pflash0"), "read-only": .bool(true),
                                                   "file": .object(["driver": .string("file"), "filename": .string(code)])]).text]
        // Without an efidisk, the EFI vars live in a temporary copy under /run.
        let vars = efidisk ?? {
            var drive = Drive(key: "efidisk0", value: "/run/qemu-server/efidisk/\(vmid)-ovmf.fd")!
            drive.interface = "efidisk"
            return drive
        }()
        cmd += ["-blockdev", try blockdev(vars, readOnly: templateSource).text]
        return (cmd, ["pflash0=pflash0", "pflash1=drive-efidisk0"])
    }
}
