import Foundation
import Resources

/// The distribution setup Proxmox VE runs in a container's root file system (pve-container's `PVE::LXC::Setup`):
/// after creation (password, ssh keys, crontab, init, network, hostname, DNS, timezone) and before every start (init,
/// network, hostname, DNS, timezone). The distribution is detected from the root file system, as upstream does; the
/// files are reached only through `ContainerFiles`.
public struct LxcGuestSetup {
    public enum Distribution: Equatable, Sendable, CustomStringConvertible {
        case debian(Int), devuan(Int), alpine(String), centos(Double), fedora(Double), opensuse, unmanaged

        public var description: String {
            switch self {
            case .debian(let version): "debian \(version)"
            case .devuan(let version): "devuan \(version)"
            case .alpine(let version): "alpine \(version)"
            case .centos(let version): "centos \(version)"
            case .fedora(let version): "fedora \(version)"
            case .opensuse: "opensuse"
            case .unmanaged: "unmanaged"
            }
        }
    }

    public struct SetupError: Error, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// What the setup takes from outside the container config.
    public struct Environment {
        /// A crypt(3) hash for root (`pct create --password`); nil leaves the password alone.
        public var rootPassword: String?
        /// `authorized_keys` lines for root; nil or empty writes none.
        public var sshKeys: String?
        /// Used when the config has no `nameserver` / `searchdomain` (upstream takes the host's resolv.conf).
        public var nameservers: [String]
        public var searchDomains: [String]
        /// Connection UUIDs for the RHEL network files.
        public var makeUUID: () -> String
        /// Days since the epoch, for the shadow file's last-change field.
        public var days: Int
        /// Crontab minutes are spread with it, as upstream does with Perl's rand().
        public var random: DRand48

        public init(rootPassword: String? = nil, sshKeys: String? = nil, nameservers: [String], searchDomains: [String],
                    makeUUID: @escaping () -> String = { UUID().uuidString.lowercased() }, days: Int, random: DRand48 = DRand48(seed: 0)) {
            self.rootPassword = rootPassword
            self.sshKeys = sshKeys
            self.nameservers = nameservers
            self.searchDomains = searchDomains
            self.makeUUID = makeUUID
            self.days = days
            self.random = random
        }
    }

    /// One `netN` as the guest sees it.
    struct NIC {
        var name: String
        var ip: String?
        var gw: String?
        var ip6: String?
        var gw6: String?
    }

    let files: any ContainerFiles
    public let distribution: Distribution
    let hostnameValue: String?
    let nameserverValue: String?
    let searchdomainValue: String?
    let ttyCount: Int
    let unprivileged: Bool
    let timezone: String?
    let nics: [NIC]
    /// `net0`: its addresses are the host's in /etc/hosts.
    let net0: NIC?

    static let blockHead = "# --- BEGIN PVE ---\n"
    static let blockTail = "# --- END PVE ---\n"

    /// Reads the container config and detects the distribution in `files`.
    public init(config: GuestConfig.Section, files: any ContainerFiles) throws {
        self.files = files
        func value(_ key: String) -> String? { config.entry(key)?.value }
        hostnameValue = value("hostname")
        nameserverValue = value("nameserver")
        searchdomainValue = value("searchdomain")
        ttyCount = value("tty").flatMap { Int($0) } ?? 2
        unprivileged = value("unprivileged") == "1" || config.entries.contains { $0.key == "lxc.idmap" }
        timezone = value("timezone")
        let indexed = config.entries.compactMap { entry -> (Int, NIC)? in
            guard entry.key.hasPrefix("net"), let index = Int(entry.key.dropFirst(3)) else { return nil }
            let properties = PropertyString(parsing: entry.value)
            guard let name = properties["name"] else { return nil }
            return (index, NIC(name: name, ip: properties["ip"], gw: properties["gw"], ip6: properties["ip6"], gw6: properties["gw6"]))
        }.sorted { $0.0 < $1.0 }
        nics = indexed.map(\.1)
        net0 = indexed.first { $0.0 == 0 }?.1
        distribution = value("ostype") == "unmanaged" ? .unmanaged : try Self.detect(files)
    }

    // MARK: - Detection

    static func osRelease(_ files: any ContainerFiles) -> [String: String] {
        guard let text = files.contents("/etc/os-release") ?? files.contents("/usr/lib/os-release") else { return [:] }
        var values: [String: String] = [:]
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            guard let equals = trimmed.firstIndex(of: "=") else { continue }
            let key = trimmed[..<equals]
            guard let first = key.first, first.isLetter || first == "_",
                  key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { continue }
            let raw = trimmed[trimmed.index(after: equals)...]
            if raw.first == "'" {
                let body = raw.dropFirst()
                values[String(key)] = body.firstIndex(of: "'").map { String(body[..<$0]) } ?? ""
            } else if raw.first == "\"" {
                var result = ""
                var escaped = false
                var closed = false
                for character in raw.dropFirst() {
                    if escaped {
                        result.append(["n": "\n", "t": "\t"][character] ?? character)
                        escaped = false
                    } else if character == "\\" {
                        escaped = true
                    } else if character == "\"" {
                        closed = true
                        break
                    } else {
                        result.append(character)
                    }
                }
                values[String(key)] = closed ? result : ""
            } else {
                values[String(key)] = String(raw.prefix { $0.isASCII && ($0.isLetter || $0.isNumber) })
            }
        }
        return values
    }

    static func detect(_ files: any ContainerFiles) throws -> Distribution {
        let release = osRelease(files)
        let aliases = ["opensuse-leap": "opensuse", "opensuse-tumbleweed": "opensuse", "opensuse-slowroll": "opensuse", "sles": "opensuse",
                       "rocky": "centos", "almalinux": "centos"]
        var type: String?
        if let id = release["ID"] {
            let known: Set<String> = ["alpine", "centos", "debian", "devuan", "fedora", "opensuse", "unmanaged"]
            if known.contains(id) { type = id } else if let alias = aliases[id] { type = alias }
        }
        if type == nil {
            if files.contents("/etc/lsb-release")?.split(separator: "\n").contains(where: { $0.lowercased() == "distrib_id=ubuntu" }) == true {
                throw SetupError("ubuntu: this version of pvectl does not set up Ubuntu containers")
            }
            let markers: [(String, String)] = [("/etc/debian_version", "debian"), ("/etc/devuan_version", "devuan"),
                                               ("/etc/SuSE-brand", "opensuse"), ("/etc/SuSE-release", "opensuse"),
                                               ("/etc/fedora-release", "fedora"), ("/etc/centos-release", "centos"),
                                               ("/etc/redhat-release", "centos"), ("/etc/alpine-release", "alpine")]
            type = markers.first { files.exists($0.0) }?.1
            if type == nil && files.exists("/etc/os-release") { throw SetupError("unable to detect OS distribution") }
        }
        switch type ?? "unmanaged" {
        case "debian":
            let first = firstLine(files.contents("/etc/debian_version"))
            let named = ["stretch/sid": "9.1", "buster/sid": "10", "bullseye/sid": "11", "bookworm/sid": "12", "trixie/sid": "13",
                         "forky/sid": "14", "duke/sid": "15", "kali-rolling": "12"][first] ?? first
            guard let version = Int(named.prefix { $0.isNumber }), named.first?.isNumber == true else {
                throw SetupError("unable to read the Debian version from /etc/debian_version: '\(first)'")
            }
            guard version >= 4 else { throw SetupError("Debian \(version) is not supported") }
            return .debian(version)
        case "devuan":
            let first = firstLine(files.contents("/etc/devuan_version")).lowercased()
            let codename = first.split(separator: "/").first.map(String.init) ?? first
            let versions = ["jessie": 8, "ascii": 9, "beowulf": 10, "chimaera": 11, "daedalus": 12, "excalibur": 13]
            if let version = versions[codename] { return .devuan(version) }
            if let id = release["VERSION_ID"], let version = Int(id) { return .devuan(version) }
            throw SetupError("unknown Devuan version '\(first)'")
        case "alpine":
            return .alpine(firstLine(files.contents("/etc/alpine-release")))
        case "centos":
            guard let version = centosVersion(files.contents("/etc/redhat-release")) else {
                throw SetupError("unable to read the release from /etc/redhat-release")
            }
            guard version >= 5 && version < 11 else { throw SetupError("CentOS \(version) is not supported") }
            return .centos(version)
        case "fedora":
            guard let version = release["VERSION_ID"].flatMap(Double.init), version >= 22 else {
                throw SetupError("Fedora before 22 (or without VERSION_ID) is not supported")
            }
            return .fedora(version)
        case "opensuse":
            return .opensuse
        default:
            return .unmanaged
        }
    }

    /// The container's architecture from its `/bin/sh` (links followed inside the root), as pve-container reads it when
    /// the config has no `arch`: the ELF machine field; nil when it cannot be read (upstream then assumes amd64).
    public static func detectArch(_ files: any ContainerFiles) -> String? {
        guard let header = files.prefix("/bin/sh", count: 20), header.count == 20, header.prefix(4) == [0x7f, 0x45, 0x4c, 0x46] else {
            return nil
        }
        // Upstream reads the machine as a big-endian u16 at bytes 17-18, which works for little-endian machines below 256.
        switch (UInt16(header[17]) << 8) | UInt16(header[18]) {
        case 0x03: return "i386"
        case 0x3e: return "amd64"
        case 0x28: return "armhf"
        case 0xb7: return "arm64"
        case 0xf3: return header[4] == 1 ? "riscv32" : "riscv64"
        default: return nil
        }
    }

    static func firstLine(_ text: String?) -> String {
        String((text ?? "").split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
    }

    /// `release 6.3` → 6.3, `release 10` → 10, from the first line.
    static func centosVersion(_ text: String?) -> Double? {
        let line = firstLine(text)
        return (match(line, #"release\s+(\d+\.\d+)"#) ?? match(line, #"release\s+(\d+)"#))?[1].flatMap { Double($0) }
    }

    // MARK: - Hooks

    /// After creation, as `pct create` runs it.
    public func postCreate(_ environment: inout Environment) throws {
        guard distribution != .unmanaged else { return }
        try clearMachineID()
        try templateFixup()
        try randomizeCrontab(&environment.random)
        if let password = environment.rootPassword { try setRootPassword(password, days: environment.days) }
        if let keys = environment.sshKeys, !keys.isEmpty { try setRootSSHKeys(keys) }
        try setupInit()
        try setupNetwork(environment)
        try setHostname(environment)
        try setDNS(environment)
        try setTimezone()
    }

    /// Before every start, as pve-container's pre-start hook runs it.
    public func preStart(_ environment: Environment) throws {
        guard distribution != .unmanaged else { return }
        try files.write("/fastboot", "", mode: 0o644)
        try setupInit()
        try setupNetwork(environment)
        try setHostname(environment)
        try setDNS(environment)
        try setTimezone()
    }

    // MARK: - Common file primitives

    func directory(of path: String) -> String { (path as NSString).deletingLastPathComponent }
    func isIgnored(_ path: String) -> Bool {
        files.isRegularFile(directory(of: path) + "/.pve-ignore." + (path as NSString).lastPathComponent)
    }

    func write(_ path: String, _ text: String, mode: Int = 0o644) throws {
        guard !isIgnored(path) else { return }
        try files.write(path, text, mode: mode)
    }

    func remove(_ path: String) throws {
        guard !isIgnored(path), files.exists(path) else { return }
        try files.remove(path)
    }

    /// Lines as Perl's split on newlines gives them: trailing empty lines dropped.
    static func lines(_ text: String) -> [String] {
        var parts = text.components(separatedBy: "\n")
        while parts.last == "" { parts.removeLast() }
        return parts
    }

    enum Placement { case append, prepend, replace }

    /// The `# --- BEGIN PVE ---` … `# --- END PVE ---` section of a file: replaced where it is, or added.
    func modifySection(_ path: String, _ data: String, placement: Placement = .append, deleteWhenEmpty: Bool = false) throws {
        guard !isIgnored(path) else { return }
        var data = data
        if !data.isEmpty && !data.hasSuffix("\n") { data += "\n" }
        guard files.isRegularFile(path), let text = files.contents(path) else {
            if !data.isEmpty { try write(path, Self.blockHead + data + Self.blockTail) }
            return
        }
        var lines = Self.lines(text)
        let begin = lines.firstIndex { Self.matches($0, #"^#\s*---\s*BEGIN\s*PVE\s*"#) }
        let end = begin.flatMap { begin in lines[(begin + 1)...].firstIndex { Self.matches($0, #"(?i)^#\s*---\s*END\s*PVE\s*"#) } }
        if let begin, let end {
            if data.isEmpty {
                if begin == 0 && end == lines.count - 1 {
                    if deleteWhenEmpty { try remove(path) }
                    return
                }
                lines.replaceSubrange(begin...end, with: [Self.blockHead + "# --- END PVE ---"])
            } else {
                lines.replaceSubrange(begin...end, with: [Self.blockHead + data + "# --- END PVE ---"])
            }
            try write(path, lines.joined(separator: "\n") + "\n")
            return
        }
        guard !data.isEmpty else { return }
        let content = lines.joined(separator: "\n") + "\n"
        let block = Self.blockHead + data + Self.blockTail
        switch placement {
        case .replace: try write(path, block)
        case .prepend: try write(path, block + content)
        case .append: try write(path, content + block)
        }
    }

    static func matches(_ text: String, _ pattern: String) -> Bool { match(text, pattern) != nil }

    /// The capture groups of the first match (index 0 is the whole match), or nil.
    static func match(_ text: String, _ pattern: String) -> [String?]? {
        guard let expression = try? NSRegularExpression(pattern: pattern),
              let result = expression.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) else { return nil }
        return (0..<result.numberOfRanges).map { index in Range(result.range(at: index), in: text).map { String(text[$0]) } }
    }

    func nameservers(_ environment: Environment) -> [String] { nameserverValue.map(StorageVolumes.splitList) ?? environment.nameservers }
    func searchDomains(_ environment: Environment) -> [String] {
        searchdomainValue.map(StorageVolumes.splitList) ?? environment.searchDomains
    }

    // MARK: - Addresses

    /// `a.b.c.d/N` with 8 ≤ N ≤ 32 → (address, dotted netmask).
    static func ipv4CIDR(_ text: String) -> (address: String, netmask: String)? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, IPAddress.isIPv4(String(parts[0])), let prefix = Int(parts[1]), (8...32).contains(prefix) else { return nil }
        let mask = prefix == 0 ? UInt32(0) : UInt32.max << (32 - UInt32(prefix))
        let netmask = [24, 16, 8, 0].map { String((mask >> UInt32($0)) & 0xff) }.joined(separator: ".")
        return (String(parts[0]), netmask)
    }

    /// Whether `address` lies in the network of `cidr` (its host bits ignored).
    static func inNetwork(_ address: String, _ cidr: String) -> Bool {
        cidr.contains("/") && FirewallAddress.parse(cidr)?.contains(address) == true
    }

    static func isLinkLocal(_ address: String) -> Bool { inNetwork(address, "fe80::/10") }

    /// net0's static addresses without their prefix, IPv4 first (upstream's get_primary_ips).
    var primaryAddress: String? {
        guard let net0 else { return nil }
        let v4 = net0.ip.flatMap { ["dhcp", "manual"].contains($0) ? nil : String($0.split(separator: "/").first ?? "") }
        let v6 = net0.ip6.flatMap { ["auto", "dhcp", "manual"].contains($0) ? nil : String($0.split(separator: "/").first ?? "") }
        return v4 ?? v6
    }

    // MARK: - Steps every distribution shares

    func systemdPresent() -> Bool { files.isExecutable("/lib/systemd/systemd") || files.isExecutable("/usr/lib/systemd/systemd") }

    func clearMachineID() throws {
        if files.isRegularFile("/var/lib/dbus/machine-id") && !files.isSymbolicLink("/var/lib/dbus/machine-id") && systemdPresent() {
            try remove("/var/lib/dbus/machine-id")
        }
        if files.exists("/etc/machine-id") { try remove("/etc/machine-id") }
    }

    /// Spreads the minutes of root's cron lines, as pve-container does so that containers from one template do not all
    /// run their jobs at once.
    func randomizeCrontab(_ random: inout DRand48) throws {
        var paths = files.isRegularFile("/etc/crontab") ? ["/etc/crontab"] : []
        paths += files.entries("/etc/cron.d").filter { name in
            !name.isEmpty && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }
        }.map { "/etc/cron.d/" + $0 }
        for path in paths {
            guard let text = files.contents(path) else { continue }
            var output = ""
            for line in Self.lines(text) {
                if let groups = Self.match(line, #"^\d+(\s+\S+\s+\S+\s+\S+\s+\S+\s+root\s+\S.*)$"#), let rest = groups[1] {
                    output += "\(Int(random.next() * 59))\(rest)\n"
                } else {
                    output += line + "\n"
                }
            }
            try write(path, output)
        }
    }

    func setRootPassword(_ password: String, days: Int) throws {
        guard let passwd = files.contents("/etc/passwd") else { return }
        guard Self.matches(password, #"^\$(1|2|2a|2x|2y|5|6)\$[A-Za-z0-9./]{1,16}\$[A-Za-z0-9./]+$"#) else {
            throw SetupError("the root password must be given as a crypt(3) hash")
        }
        func rewrite(_ text: String, _ change: (String) -> String) -> String {
            text.components(separatedBy: "\n").map { $0.hasPrefix("root:") ? change($0) : $0 }.joined(separator: "\n")
        }
        if let shadow = files.contents("/etc/shadow") {
            try write("/etc/shadow", rewrite(shadow) { line in
                let fields = line.split(separator: ":", maxSplits: 3, omittingEmptySubsequences: false)
                return "root:\(password):\(days):" + (fields.count > 3 ? String(fields[3]) : "")
            }, mode: 0o640)
            try write("/etc/passwd", rewrite(passwd) { line in
                let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
                return "root:x:" + (fields.count > 2 ? String(fields[2]) : "")
            })
        } else {
            try write("/etc/passwd", rewrite(passwd) { line in
                let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
                return "root:\(password):" + (fields.count > 2 ? String(fields[2]) : "")
            })
        }
    }

    func setRootSSHKeys(_ keys: String) throws {
        var home = "/root/"
        if let passwd = files.contents("/etc/passwd"),
           let root = passwd.split(separator: "\n").first(where: { $0.hasPrefix("root:") }) {
            let fields = root.split(separator: ":", omittingEmptySubsequences: false)
            if fields.count > 5 { home = String(fields[5]) }
        }
        guard files.isDirectory(home) || files.isSymbolicLink(home) else { throw SetupError("root's home \(home) is not a directory") }
        let base = home.hasSuffix("/") ? String(home.dropLast()) : home
        if !files.isDirectory(base + "/.ssh") { try files.makeDirectory(base + "/.ssh", mode: 0o700) }
        try modifySection(base + "/.ssh/authorized_keys", keys)
    }

    /// `/etc/hosts` with the PVE section, and `/etc/hostname`.
    func setHostname(_ environment: Environment) throws {
        let hostname = hostnameValue ?? "localhost"
        let short = String(hostname.prefix { $0 != "." })
        let fullNameEverywhere = { if case .centos = distribution { true } else if case .fedora = distribution { true } else { false } }()
        try updateHosts(hostname: hostname, short: short, searchDomains: searchDomains(environment))
        try write("/etc/hostname", (fullNameEverywhere ? hostname : short) + "\n")
        guard fullNameEverywhere, let network = files.isRegularFile("/etc/sysconfig/network") ? files.contents("/etc/sysconfig/network") : nil
        else { return }
        try write("/etc/sysconfig/network", Self.setting("HOSTNAME", to: hostname, in: network, pattern: #"^HOSTNAME=[ \t]*(\S+)[ \t]*$"#))
    }

    /// Replaces the first line matching `pattern` by `KEY=value`, or appends it.
    static func setting(_ key: String, to value: String, in text: String, pattern: String) -> String {
        var lines = text.components(separatedBy: "\n")
        if let index = lines.firstIndex(where: { matches($0, pattern) }) {
            lines[index] = "\(key)=\(value)"
            return lines.joined(separator: "\n")
        }
        return text + "\(key)=\(value)\n"
    }

    func updateHosts(hostname: String, short: String, searchDomains: [String]) throws {
        guard !isIgnored("/etc/hosts") else { return }
        let names = hostname.contains(".") ? "\(hostname) \(short)"
            : (searchDomains.map { "\(hostname).\($0) " }.joined() + hostname)
        var block = ""
        if files.isRegularFile("/etc/hosts"), let text = files.contents("/etc/hosts") {
            let outside = Self.withoutSections(text).components(separatedBy: "\n")
            if !outside.contains(where: { Self.matches($0, #"^[ \t]*127\.0\.0\.1[ \t]+"#) }) { block += "127.0.0.1 localhost.localnet localhost\n" }
            if !outside.contains(where: { Self.matches($0, #"^[ \t]*::1[ \t]+"#) }) { block += "::1 localhost.localnet localhost\n" }
        } else {
            block += "127.0.0.1 localhost.localnet localhost\n::1 localhost.localnet localhost\n"
        }
        if let address = primaryAddress {
            block += "\(address) \(names)\n"
        } else {
            block += short != "localhost" ? "127.0.1.1 \(names)\n" : "127.0.1.1 localhost\n"
        }
        try modifySection("/etc/hosts", block)
    }

    /// The text without its PVE sections (from the first BEGIN line to the last END line), for the localhost checks.
    static func withoutSections(_ text: String) -> String {
        let lines = text.components(separatedBy: "\n")
        guard let begin = lines.firstIndex(where: { $0.drop { $0 == " " || $0 == "\t" }.hasPrefix("# --- BEGIN PVE ---") }),
              let end = lines.lastIndex(where: { $0.drop { $0 == " " || $0 == "\t" }.hasPrefix("# --- END PVE ---") }), end >= begin
        else { return text }
        return (lines[..<begin] + [""] + lines[(end + 1)...]).joined(separator: "\n")
    }

    func setDNS(_ environment: Environment) throws {
        let domains = searchDomains(environment)
        var data = domains.isEmpty ? "" : "search \(domains.joined(separator: " "))\n"
        for server in nameservers(environment) { data += "nameserver \(server)\n" }
        try modifySection("/etc/resolv.conf", data, placement: .replace)
    }

    func setTimezone() throws {
        guard let timezone, timezone != "host" else { return }
        let target = "/usr/share/zoneinfo/" + timezone
        guard files.isRegularFile(target) else { return }
        if files.isSymbolicLink("/etc/localtime") || files.exists("/etc/localtime") { try remove("/etc/localtime") }
        try files.symlink("/etc/localtime", to: target)
        if files.isRegularFile("/etc/timezone") { try write("/etc/timezone", timezone + "\n") }
    }

    /// The ttys root may log in on, each once.
    func setupSecuretty(_ devices: [String]? = nil) throws {
        guard files.isRegularFile("/etc/securetty"), var text = files.contents("/etc/securetty") else { return }
        let prefix = deviceDirectory
        let wanted = devices ?? ["console", "tty1", "tty2", "tty3", "tty4"].map { prefix + $0 }
        if text.hasSuffix("\n") { text.removeLast() }
        text += "\n"
        for device in wanted where !text.components(separatedBy: "\n").contains(where: {
            $0.hasPrefix(device) && $0.dropFirst(device.count).allSatisfy(\.isWhitespace)
        }) {
            text += device + "\n"
        }
        try write("/etc/securetty", text)
    }

    /// `lxc/` for a privileged container of the RHEL and SUSE families (their consoles live there), else nothing.
    var deviceDirectory: String {
        switch distribution {
        case .debian, .devuan, .alpine, .unmanaged: ""
        case .centos, .fedora, .opensuse: unprivileged ? "" : "lxc/"
        }
    }

    /// Drops the `127.0.1.1 LXC_NAME` line a template leaves in /etc/hosts.
    func removeLXCName() throws {
        guard files.exists("/etc/hosts"), let text = files.contents("/etc/hosts") else { return }
        let kept = Self.lines(text).filter { !Self.matches($0, #"^127.0.1.1\s+LXC_NAME$"#) }
        try write("/etc/hosts", kept.joined(separator: "\n") + "\n")
    }

    var systemdUnitDirectory: String { files.isExecutable("/lib/systemd/systemd") ? "/lib/systemd/system" : "/usr/lib/systemd/system" }

    /// Getty units on the container's ttys, as pve-container sets them up for systemd guests.
    func setupContainerGetty() throws {
        let template = systemdUnitDirectory + "/container-getty@.service"
        guard let text = files.contents(template) else { return }
        let replaced = text.replacingOccurrences(of: "pts/%I", with: deviceDirectory + "tty%I")
            .replacingOccurrences(of: "lxc/tty%I", with: deviceDirectory + "tty%I")
        if replaced != text { try write(template, replaced) }
        let wants = "/etc/systemd/system/getty.target.wants"
        for index in 1...6 {
            try? remove("\(wants)/getty@tty\(index).service")
            try? remove("\(wants)/container-getty@\(index).service")
            if index <= ttyCount && files.isDirectory(wants) { try? files.symlink("\(wants)/container-getty@\(index).service", to: template) }
        }
        try? remove("/etc/systemd/system/getty.target")
    }

    /// `getty@.service` on hosts without container-getty waits for /dev/tty, not /dev/tty0.
    func fixupOldGetty() throws {
        let getty = systemdUnitDirectory + "/getty@.service"
        guard let text = files.contents(getty) else { return }
        let hasContainerGetty = files.exists(systemdUnitDirectory + "/container-getty@.service")
        let (from, to) = hasContainerGetty ? ("ConditionPathExists=/dev/tty", "ConditionPathExists=/dev/tty0")
            : ("ConditionPathExists=/dev/tty0", "ConditionPathExists=/dev/tty")
        var lines = text.components(separatedBy: "\n")
        guard let index = lines.firstIndex(of: from) else { return }
        lines[index] = to
        try write(getty, lines.joined(separator: "\n"))
    }

    func writePreset(_ extra: [String: Bool] = [:]) throws {
        var units: [String: Bool] = ["sys-kernel-config.mount": false, "sys-kernel-debug.mount": false, "getty@.service": false,
                                     "container-getty@.service": true]
        units.merge(extra) { _, new in new }
        var text = "# Added by PVE at create-time for first-boot configuration.\n"
        for unit in units.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            text += (units[unit]! ? "enable " : "disable ") + unit + "\n"
        }
        try files.makeDirectory("/etc/systemd/system-preset", mode: 0o755)
        try write("/etc/systemd/system-preset/00-pve.preset", text)
    }

    // MARK: - Per distribution

    func templateFixup() throws {
        switch distribution {
        case .debian, .devuan:
            if files.isRegularFile("/etc/ssl/private/ssl-cert-snakeoil.key") {
                // The template's key is everyone's: it goes, and a new one is made on first boot where systemd can.
                try remove("/etc/ssl/private/ssl-cert-snakeoil.key")
            }
        case .alpine:
            for (level, service) in [("boot", "networking"), ("boot", "bootmisc"), ("boot", "hostname"), ("shutdown", "killprocs"),
                                     ("shutdown", "savecache")] {
                try? files.symlink("/etc/runlevels/\(level)/\(service)", to: "/etc/init.d/\(service)")
            }
            try setupSecuretty()
            try removeLXCName()
        case .centos(let version):
            if version < 7 { try centosUpstartFixup() }
            if !files.exists("/etc/locale.conf") { try write("/etc/locale.conf", "LANG=C.utf8") }
            try setupSecuretty()
            try removeLXCName()
            for unit in ["sys-kernel-config.mount", "sys-kernel-debug.mount"] where !files.isRegularFile("/etc/systemd/system/" + unit) {
                try? files.symlink("/etc/systemd/system/" + unit, to: "/dev/null")
            }
        case .fedora:
            try setupSecuretty()
            try? remove("/etc/systemd/system/getty@.service")
            try removeLXCName()
        case .opensuse:
            try setupSecuretty()
            if !files.exists("/etc/locale.conf") { try write("/etc/locale.conf", "LANG=C.utf8") }
            if !files.isRegularFile("/etc/localtime") {
                try? remove("/etc/localtime")
                try? files.symlink("/etc/localtime", to: "/usr/share/zoneinfo/UTC")
            }
            try removeLXCName()
        case .unmanaged:
            break
        }
    }

    func setupInit() throws {
        switch distribution {
        case .debian(let version), .devuan(let version):
            if files.linkTarget("/sbin/init")?.hasSuffix("/systemd") == true {
                try setupContainerGetty()
                if case .debian = distribution, version >= 12 { try writePreset(["systemd-networkd.service": false]) }
            }
            try debianInittab(version: version)
        case .alpine:
            guard files.isRegularFile("/etc/inittab"), let text = files.contents("/etc/inittab") else { return }
            var output = Self.lines(text).filter { !Self.matches($0, #"^\s*tty\d+:\d*:[^:]*:.*getty"#) }.joined(separator: "\n") + "\n"
            for index in 1...max(1, ttyCount) where index <= ttyCount && index != 7 {
                output += "tty\(index)::respawn:/sbin/getty 38400 tty\(index)\n"
            }
            try write("/etc/inittab", output)
        case .centos(let version):
            try fixupOldGetty()
            try setupContainerGetty()
            if version >= 8 { try writePreset() }
        case .fedora(let version):
            try setupContainerGetty()
            if version >= 37 { try writePreset(["systemd-networkd.service": true]) }
        case .opensuse:
            try fixupOldGetty()
            try setupContainerGetty()
        case .unmanaged:
            break
        }
    }

    func debianInittab(version: Int) throws {
        guard files.isRegularFile("/etc/inittab"), let text = files.contents("/etc/inittab") else { return }
        var output = Self.lines(text).filter {
            !Self.matches($0, #"^\s*\d+:\d*:[^:]*:.*getty"#) && !Self.matches($0, #"^\s*p[fno0]:"#)
        }.joined(separator: "\n") + "\n"
        output += "p0::powerfail:/sbin/init 0\n"
        for index in stride(from: 1, through: ttyCount, by: 1) where index != 7 {
            let levels = index == 1 ? "2345" : "23"
            output += version < 7 ? "\(index):\(levels):respawn:/sbin/getty -L 38400 tty\(index)\n"
                : "\(index):\(levels):respawn:/sbin/getty --noclear 38400 tty\(index)\n"
        }
        try write("/etc/inittab", output)
    }

    func setupNetwork(_ environment: Environment) throws {
        switch distribution {
        case .debian, .devuan: try DebianInterfaces(setup: self).write()
        case .alpine: try DebianInterfaces(setup: self, ipv6AutoIsManual: true).write()
        case .centos: try setupRedHatNetwork(environment)
        case .fedora(let version):
            let sysconfigUsed = files.isRegularFile("/etc/sysconfig/network")
            if version <= 24 || (version <= 27 && sysconfigUsed) { try setupRedHatNetwork(environment) }
            if version >= 25 { try writeNetworkdFiles() }
        case .opensuse: try setupSUSENetwork()
        case .unmanaged: break
        }
    }
}

/// Perl's rand() after srand(seed): drand48, so that crontab minutes match upstream's for the same seed.
public struct DRand48: Sendable {
    var state: UInt64

    public init(seed: UInt32) { state = (UInt64(seed) << 16) | 0x330E }

    public mutating func next() -> Double {
        state = (0x5DEECE66D &* state &+ 0xB) & 0xFFFF_FFFF_FFFF
        return Double(state) / Double(UInt64(1) << 48)
    }
}
