/// The file formats `pvectl fmt` knows, detected from a path when not given.
public enum ConfigFormat: String, CaseIterable, Sendable {
    case storage, qemu, lxc, interfaces, firewall, corosync, datacenter, user
    /// Other SectionConfig files: ha/resources.cfg, ha/groups.cfg, domains.cfg ...
    case sectionconfig

    public static func detect(path: String) -> ConfigFormat? {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        if name == "storage.cfg" { return .storage }
        if name == "datacenter.cfg" { return .datacenter }
        if name == "user.cfg" { return .user }
        if name == "corosync.conf" { return .corosync }
        if name.hasSuffix(".fw") { return .firewall }
        if name == "interfaces" || name == "interfaces.new" { return .interfaces }
        if name.hasSuffix(".conf"), let kind = GuestConfig.kind(forPath: path) { return kind == .qemu ? .qemu : .lxc }
        if ["domains.cfg", "resources.cfg", "groups.cfg", "rules.cfg", "jobs.cfg", "replication.cfg",
            "vnets.cfg", "zones.cfg", "subnets.cfg", "fabrics.cfg"].contains(name) { return .sectionconfig }
        return nil
    }

    public struct Result: Sendable {
        /// Problems that make the file unsafe to rewrite (parse errors).
        public var diagnostics: [Diagnostic]
        public var canonical: String?
    }

    /// Parses and renders the file the way Proxmox writes it.
    /// - Parameter dropInvalid: drop values that fail their type check, as
    ///   Proxmox does when it rewrites a guest config (off: keep everything).
    public func canonicalize(_ text: String, file: String, dropInvalid: Bool = false) -> Result {
        switch self {
        case .storage:
            let (parsed, diagnostics) = SectionConfigFile.parse(text, file: file) { Specs.storage.sectionLayout(forType: $0) }
            return Result(diagnostics: diagnostics, canonical: parsed.canonicalText())
        case .sectionconfig:
            let (parsed, diagnostics) = SectionConfigFile.parse(text, file: file)
            return Result(diagnostics: diagnostics, canonical: parsed.canonicalText())
        case .qemu, .lxc:
            let kind: GuestConfig.Kind = self == .qemu ? .qemu : .lxc
            let (parsed, diagnostics) = GuestConfig.parse(text, file: file, kind: kind)
            return Result(diagnostics: diagnostics, canonical: parsed.canonicalText(spec: dropInvalid ? Specs.guest(kind) : nil))
        case .interfaces:
            let (_, diagnostics) = InterfacesFile.parse(text, file: file)
            do {
                return Result(diagnostics: diagnostics, canonical: try PVENetworkConfig(parsing: text).write())
            } catch {
                return Result(diagnostics: diagnostics + [.error(SourceLocation(file: file, line: 1), error.description)], canonical: nil)
            }
        case .firewall:
            let (parsed, diagnostics) = FirewallConfig.parse(text, file: file)
            return Result(diagnostics: diagnostics, canonical: parsed.canonicalText())
        case .corosync:
            let (parsed, diagnostics) = CorosyncConfig.parse(text, file: file)
            return Result(diagnostics: diagnostics, canonical: parsed.canonicalText())
        case .datacenter:
            let (parsed, diagnostics) = DatacenterConfig.parse(text, file: file)
            return Result(diagnostics: diagnostics, canonical: parsed.canonicalText())
        case .user:
            let (parsed, diagnostics) = UserConfig.parse(text, file: file)
            return Result(diagnostics: diagnostics, canonical: parsed.canonicalText())
        }
    }
}
