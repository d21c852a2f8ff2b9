import Foundation
import Testing
import TestSupport
@testable import Reconciler
@testable import Resources

/// Flags follow Proxmox's parsers in every format, driven by the specs rather
/// than listed key by key: every boolean a spec declares is tried with every
/// spelling upstream's parser of that format accepts or refuses.
@Suite("Booleans are read as Proxmox's parsers read them, in every format")
struct BooleanSpellingTests {
    /// Spellings and what Proxmox's JSON schema makes of them.
    static let spellings: [(text: String, canonical: String)] = [
        ("1", "1"), ("0", "0"), ("yes", "1"), ("no", "0"), ("on", "1"), ("off", "0"),
        ("true", "1"), ("false", "0"), ("YES", "1"), ("Off", "0"), ("True", "1"),
    ]

    /// Every boolean option of a spec, with an indexed key made concrete (`foo[n]` → `foo0`).
    static func booleanKeys(_ options: [String: OptionSpec]) -> [String] {
        options.filter { $0.value.type == .boolean }.keys.map { $0.replacingOccurrences(of: "[n]", with: "0") }.sorted()
    }

    /// Property-string options whose format has boolean keys: (option key, boolean sub-key).
    static func propertyBooleans(_ spec: KindSpec) -> [(key: String, subkey: String)] {
        var result: [(String, String)] = []
        for (key, option) in spec.options.sorted(by: { $0.key < $1.key }) where option.type == .property {
            guard let format = option.format.flatMap({ spec.formats[$0] }) else { continue }
            for (subkey, subspec) in format.keys.sorted(by: { $0.key < $1.key })
            where subspec.type == .boolean && format.modelKeys?.contains(subkey) != true {
                result.append((key.replacingOccurrences(of: "[n]", with: "0"), subkey))
            }
        }
        return result
    }

    @Test("guest configs (qemu, lxc): every boolean option and property key, every spelling, reads as 1 or 0 once loaded",
          arguments: [GuestConfig.Kind.qemu, .lxc])
    func guestConfigs(_ kind: GuestConfig.Kind) throws {
        let spec = Specs.guest(kind)
        let options = Self.booleanKeys(spec.options)
        let properties = Self.propertyBooleans(spec)
        #expect(options.count >= 5, "\(kind): \(options.count) boolean options in the spec")
        #expect(properties.count >= 5, "\(kind): \(properties.count) boolean property keys in the spec")
        let root = try TemporaryDirectory()
        let directory = kind == .qemu ? "qemu-server" : "lxc"
        var checked = 0
        for (index, spelling) in Self.spellings.enumerated() {
            var text = ""
            for key in options { text += "\(key): \(spelling.text)\n" }
            var lines: [String: String] = [:]
            for (key, subkey) in properties { lines[key, default: ""] += (lines[key] == nil ? "" : ",") + "\(subkey)=\(spelling.text)" }
            for (key, value) in lines.sorted(by: { $0.key < $1.key }) where !options.contains(key) { text += "\(key): \(value)\n" }
            let vmid = 100 + index
            try root.write("nodes/pve1/\(directory)/\(vmid).conf", text)
            let state = DesiredState.load(root: root.path, interfaces: nil, node: "pve1")
            let guest = try #require(state.guests.first { $0.vmid == vmid })
            for key in options {
                #expect(spec.check(key: key, value: spelling.text) == nil, "\(kind) \(key): \(spelling.text) is a boolean upstream")
                #expect(guest.config.main[key] == spelling.canonical, "\(kind) \(key): \(spelling.text)")
                checked += 1
            }
            for (key, subkey) in properties where !options.contains(key) {
                let parsed = PropertyString(parsing: guest.config.main[key] ?? "")
                #expect(parsed[subkey] == spelling.canonical, "\(kind) \(key) \(subkey)=\(spelling.text)")
                checked += 1
            }
        }
        print("booleans \(kind): \(checked) key and spelling pairs read as upstream stores them")
    }

    @Test("a VM's own booleans drive the reconciler whatever the spelling (onboot: yes starts, template: on stops)")
    func qemuIntent() {
        for spelling in Self.spellings {
            let config = GuestConfig.parse("onboot: \(spelling.text)\n", file: "100.conf", kind: .qemu).0.withCanonicalBooleans(Specs.qemu)
            let intent = QemuReconciler.intent(vmid: 100, config: QemuReconciler.effectiveConfig(config), haState: nil, named: false)
            if spelling.canonical == "1" { #expect(intent == .run("onboot: 1"), "onboot: \(spelling.text)") }
            else { #expect(intent != .run("onboot: 1"), "onboot: \(spelling.text)") }
            let template = GuestConfig.parse("onboot: 1\ntemplate: \(spelling.text)\n", file: "100.conf", kind: .qemu).0
                .withCanonicalBooleans(Specs.qemu)
            let templateIntent = QemuReconciler.intent(vmid: 100, config: QemuReconciler.effectiveConfig(template), haState: nil, named: false)
            #expect((templateIntent == .stop("template: 1")) == (spelling.canonical == "1"), "template: \(spelling.text)")
        }
    }

    @Test("storage.cfg: every boolean property takes every spelling, and a key alone is true (disable alone disables)")
    func storage() throws {
        let spec = Specs.storage
        let keys = Self.booleanKeys(spec.options)
        #expect(keys.count >= 5 && keys.contains("disable"), "storage booleans: \(keys)")
        for key in keys {
            for spelling in Self.spellings { #expect(spec.check(key: key, value: spelling.text) == nil, "storage \(key): \(spelling.text)") }
            #expect(spec.check(key: key, value: "maybe") != nil)
            let (file, diagnostics) = SectionConfigFile.parse("dir: s\n\tpath /srv/s\n\t\(key)\n", file: "storage.cfg") {
                spec.sectionLayout(forType: $0)
            }
            #expect(file.sections.first?[key] == "1", "storage: \(key) alone")
            #expect(!diagnostics.contains { $0.severity == .error && $0.message.contains("boolean") }, "\(key) alone: \(diagnostics)")
        }
        for spelling in Self.spellings + [("", "1")] {
            let text = "dir: s\n\tpath /srv/s\n\tdisable\(spelling.0.isEmpty ? "" : " " + spelling.0)\n"
            let (file, _) = SectionConfigFile.parse(text, file: "storage.cfg") { spec.sectionLayout(forType: $0) }
            let desired = StorageDesiredState.storages(from: file, node: "pve1").storages.first { $0.id == "s" }
            #expect((desired?.inactiveReason == "disabled") == (spelling.1 == "1"), "disable \(spelling.0)")
        }
    }

    @Test("firewall files: options take 0 or 1 only, as pve-firewall's option parser does")
    func firewall() {
        let spec = Specs.firewall
        var checked = 0
        for (scope, options) in spec.scopes.sorted(by: { $0.key < $1.key }) {
            for key in Self.booleanKeys(options) {
                for spelling in Self.spellings {
                    let accepted = ["0", "1"].contains(spelling.text)
                    let problem = options[key].flatMap { ValueChecker.check(spelling.text, $0, formats: spec.formats) }
                    #expect((problem == nil) == accepted, "\(scope) \(key): \(spelling.text) → \(problem ?? "accepted")")
                    checked += 1
                }
            }
        }
        #expect(checked > 100)
        let (file, diagnostics) = FirewallConfig.parse("[OPTIONS]\n\nenable: yes\n", file: "100.fw", scope: .guest)
        let problems = diagnostics + FirewallValidator.validate(file)
        #expect(problems.contains { $0.severity == .error && $0.message.contains("'yes'") }, "\(problems)")
    }

    @Test("datacenter.cfg: booleans take every spelling of Proxmox's schema")
    func datacenter() throws {
        let spec = try #require(Specs.spec("datacenter"))
        let keys = Self.booleanKeys(spec.options)
        #expect(!keys.isEmpty)
        for key in keys {
            for spelling in Self.spellings { #expect(spec.check(key: key, value: spelling.text) == nil, "datacenter \(key): \(spelling.text)") }
        }
    }
}
