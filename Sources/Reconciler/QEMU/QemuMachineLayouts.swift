/// The controller and bridge layouts qemu-server's command lines load with
/// `-readconfig` (`pve-q35-4.0.cfg`, `pve-q35.cfg`, `pve-usb.cfg`). Guests see
/// these addresses, so they are a hardware contract; a host without
/// qemu-server gets them written from this description.
public enum QemuMachineLayouts {
    struct Device {
        var id: String
        var driver: String
        var properties: [(String, String)]
    }

    public static let fileNames = ["pve-q35-4.0.cfg", "pve-q35.cfg", "pve-usb.cfg"]

    /// ICH9 USB: an EHCI controller and its three UHCI companions at slot `slot`.
    static func usb(ehci: String, firstUHCI: Int, slot: String, bus: String?) -> [Device] {
        func placed(_ function: String, _ rest: [(String, String)]) -> [(String, String)] {
            var properties: [(String, String)] = [("multifunction", "on")]
            if let bus { properties.append(("bus", bus)) }
            return properties + [("addr", "\(slot).\(function)")] + rest
        }
        let ehciNumber = firstUHCI == 1 ? "1" : "2"
        var devices = [Device(id: ehci, driver: "ich9-usb-ehci\(ehciNumber)", properties: placed("7", []))]
        for offset in 0..<3 {
            let index = firstUHCI + offset
            devices.append(Device(id: "uhci-\(index)", driver: "ich9-usb-uhci\(index)",
                                  properties: placed(String(offset), [("masterbus", "\(ehci).0"), ("firstport", String(offset * 2))])))
        }
        return devices
    }

    static func q35(rootPortDriver: String, bridges: Int) -> [Device] {
        var devices = usb(ehci: "ehci", firstUHCI: 1, slot: "1d", bus: "pcie.0") + usb(ehci: "ehci-2", firstUHCI: 4, slot: "1a", bus: "pcie.0")
        devices.append(Device(id: "audio0", driver: "ich9-intel-hda", properties: [("bus", "pcie.0"), ("addr", "1b.0")]))
        for port in 1...4 {
            var properties: [(String, String)] = rootPortDriver == "pcie-root-port" ? [("x-speed", "16"), ("x-width", "32")] : []
            properties += [("multifunction", "on"), ("bus", "pcie.0"), ("addr", "1c.\(port - 1)"), ("port", String(port)), ("chassis", String(port))]
            devices.append(Device(id: "ich9-pcie-port-\(port)", driver: rootPortDriver, properties: properties))
        }
        devices.append(Device(id: "pcidmi", driver: "i82801b11-bridge", properties: [("bus", "pcie.0"), ("addr", "1e.0")]))
        for bridge in 0..<bridges {
            devices.append(Device(id: "pci.\(bridge)", driver: "pci-bridge",
                                  properties: [("bus", "pcidmi"), ("addr", "\(bridge + 1).0"), ("chassis_nr", String(bridge + 1))]))
        }
        return devices
    }

    /// The readconfig text of one of `fileNames`, or nil for another name.
    public static func file(named name: String) -> String? {
        let devices: [Device]
        switch name {
        case "pve-q35-4.0.cfg": devices = q35(rootPortDriver: "pcie-root-port", bridges: 4)
        case "pve-q35.cfg": devices = q35(rootPortDriver: "ioh3420", bridges: 3)
        case "pve-usb.cfg": devices = usb(ehci: "ehci", firstUHCI: 1, slot: "1d", bus: nil)
        default: return nil
        }
        return devices.map { device in
            "[device \"\(device.id)\"]\n  driver = \"\(device.driver)\"\n"
                + device.properties.map { "  \($0.0) = \"\($0.1)\"\n" }.joined()
        }.joined(separator: "\n")
    }
}
