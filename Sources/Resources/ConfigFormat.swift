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

    /// A parsed file of any format.
    enum Document {
        case sections(SectionConfigFile)
        case guest(GuestConfig)
        case interfaces(InterfacesFile)
        case firewall(FirewallConfig)
        case corosync(CorosyncConfig)
        case datacenter(DatacenterConfig)
        case user(UserConfig)

        var losslessText: String {
            switch self {
            case .sections(let file): file.losslessText()
            case .guest(let file): file.losslessText()
            case .interfaces(let file): file.losslessText()
            case .firewall(let file): file.losslessText()
            case .corosync(let file): file.losslessText()
            case .datacenter(let file): file.losslessText()
            case .user(let file): file.losslessText()
            }
        }
    }

    var guestKind: GuestConfig.Kind? {
        switch self {
        case .qemu: .qemu
        case .lxc: .lxc
        default: nil
        }
    }

    /// The one place that knows which parser reads which format.
    func parse(_ text: String, file: String) -> (Document, [Diagnostic]) {
        switch self {
        case .storage:
            let (parsed, diagnostics) = SectionConfigFile.parse(text, file: file) { Specs.storage.sectionLayout(forType: $0) }
            return (.sections(parsed), diagnostics)
        case .sectionconfig:
            let (parsed, diagnostics) = SectionConfigFile.parse(text, file: file)
            return (.sections(parsed), diagnostics)
        case .qemu, .lxc:
            let (parsed, diagnostics) = GuestConfig.parse(text, file: file, kind: guestKind!)
            return (.guest(parsed), diagnostics)
        case .interfaces:
            let (parsed, diagnostics) = InterfacesFile.parse(text, file: file)
            return (.interfaces(parsed), diagnostics)
        case .firewall:
            let (parsed, diagnostics) = FirewallConfig.parse(text, file: file)
            return (.firewall(parsed), diagnostics)
        case .corosync:
            let (parsed, diagnostics) = CorosyncConfig.parse(text, file: file)
            return (.corosync(parsed), diagnostics)
        case .datacenter:
            let (parsed, diagnostics) = DatacenterConfig.parse(text, file: file)
            return (.datacenter(parsed), diagnostics)
        case .user:
            let (parsed, diagnostics) = UserConfig.parse(text, file: file)
            return (.user(parsed), diagnostics)
        }
    }

    /// Parses and writes back unedited: the input's bytes for any input.
    public func losslessRoundTrip(_ text: String, file: String) -> String {
        parse(text, file: file).0.losslessText
    }

    /// Parse problems plus the single-file checks of the specs.
    public func validate(_ text: String, file: String) -> [Diagnostic] {
        let (document, diagnostics) = parse(text, file: file)
        switch document {
        case .sections(let parsed): return diagnostics + (self == .storage ? StorageValidator.validate(parsed) : [])
        case .guest(let parsed): return diagnostics + GuestValidator.validate(parsed, spec: Specs.guest(parsed.kind))
        case .interfaces(let parsed): return diagnostics + InterfacesValidator.validate(parsed)
        case .firewall(let parsed): return diagnostics + FirewallValidator.validate(parsed)
        case .corosync(let parsed): return diagnostics + CorosyncValidator.validate(parsed)
        case .datacenter(let parsed): return diagnostics + DatacenterValidator.validate(parsed)
        case .user(let parsed): return diagnostics + UserConfigValidator.validate(parsed)
        }
    }

    /// Parses and renders the file the way Proxmox writes it.
    /// - Parameter dropInvalid: drop values that fail their type check, as
    ///   Proxmox does when it rewrites a guest config (off: keep everything).
    public func canonicalize(_ text: String, file: String, dropInvalid: Bool = false) -> Result {
        let (document, diagnostics) = parse(text, file: file)
        switch document {
        case .sections(let parsed): return Result(diagnostics: diagnostics, canonical: parsed.canonicalText())
        case .guest(let parsed):
            guard dropInvalid else { return Result(diagnostics: diagnostics, canonical: parsed.canonicalText(spec: nil)) }
            return Result(diagnostics: parsed.recoveredByNonStrictParse(diagnostics), canonical: parsed.canonicalText(spec: Specs.guest(parsed.kind)))
        case .interfaces:
            // The canonical form is Proxmox's attribute model written out.
            do {
                return Result(diagnostics: diagnostics, canonical: try PVENetworkConfig(parsing: text).write())
            } catch {
                return Result(diagnostics: diagnostics + [.error(SourceLocation(file: file, line: 1), error.description,
                                                                 code: .conflict)], canonical: nil)
            }
        case .firewall(let parsed): return Result(diagnostics: diagnostics, canonical: parsed.canonicalText())
        case .corosync(let parsed): return Result(diagnostics: diagnostics, canonical: parsed.canonicalText())
        case .datacenter(let parsed): return Result(diagnostics: diagnostics, canonical: parsed.canonicalText())
        case .user(let parsed): return Result(diagnostics: diagnostics, canonical: parsed.canonicalText())
        }
    }
}
