import Drivers
import Foundation
import Reconciler
import Resources
import Testing
import TestSupport

/// The container guest setup against pve-container's 33 setup cases, run as upstream's runner runs them: the case
/// copied as a scratch root file system, the config parsed, the setup run twice with a fixed password hash, ssh key,
/// DNS defaults, UUID and random seed, and after each pass every `.exp` file the runner checks compared with what was
/// written. The symlink trap (debian-013's /etc/hosts pointing outside the root) must not be written through.
@Suite("LXC guest setup: pve-container's setup cases", .needsConformance)
struct LxcSetupConformanceTests {
    static let cases = Corpus.conformance.appendingPathComponent("pve-container/src/test")

    /// The files upstream's runner compares when the case has `<file>.exp` (rc.sysinit.exp is never compared).
    static let compared: [String] = {
        var paths = ["/etc/hostname", "/etc/hosts", "/etc/inittab", "/etc/locale.conf", "/etc/network/interfaces", "/etc/resolv.conf",
                     "/etc/passwd", "/etc/shadow", "/etc/sysconfig/network", "/etc/systemd/system-preset/00-pve.preset",
                     "/etc/systemd/network/eth0.network", "/etc/init/start-ttys.conf", "/etc/init/tty.conf",
                     "/etc/init/power-status-changed.conf", "/etc/securetty", "/etc/crontab", "/root/.ssh/authorized_keys",
                     "/roothome/.ssh/authorized_keys"]
        for index in 0...3 {
            paths += ["/etc/NetworkManager/system-connections/eth\(index).nmconnection",
                      "/etc/sysconfig/network-scripts/ifcfg-eth\(index)", "/etc/sysconfig/network-scripts/route-eth\(index)",
                      "/etc/sysconfig/network-scripts/route6-eth\(index)", "/etc/sysconfig/network/ifcfg-eth\(index)",
                      "/etc/sysconfig/network/ifroute-eth\(index)"]
        }
        return paths
    }()

    /// Upstream's git holds three symbolic links that the conformance copy stores as files naming their target.
    static let symbolicLinks: [String: [String]] = [
        "test-debian-013": ["etc/hosts"],
        "test-fedora-001": ["bin/sh", "etc/redhat-release"],
    ]

    /// Copies a case into `scratch/tmprootfs` (writable, links restored) with the trap's target beside it.
    static func prepare(_ name: String, in scratch: TemporaryDirectory) throws -> String {
        let root = scratch.path + "/tmprootfs"
        try FileManager.default.copyItem(atPath: cases.appendingPathComponent(name).path, toPath: root)
        try FileManager.default.copyItem(atPath: cases.appendingPathComponent("bad-path.txt").path, toPath: scratch.path + "/bad-path.txt")
        let writable = NetworkNamespace.capture(["chmod", "-R", "u+w", scratch.path])
        #expect(writable.status == 0, "\(writable.error)")
        for link in symbolicLinks[name] ?? [] {
            let path = root + "/" + link
            let target = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .newlines)
            try FileManager.default.removeItem(atPath: path)
            try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: target)
        }
        return root
    }

    /// Differences between the expected files and what the setup wrote, one line each.
    static func differences(_ name: String, root: String, days: Int) -> [String] {
        var found: [String] = []
        for path in compared {
            let expectedPath = cases.appendingPathComponent(name).path + path + ".exp"
            guard var expected = try? String(contentsOfFile: expectedPath, encoding: .utf8) else { continue }
            if path == "/etc/shadow" { expected = expected.replacingOccurrences(of: "@DAYS@", with: String(days)) }
            guard let written = try? String(contentsOfFile: root + path, encoding: .utf8) else {
                found.append("\(path): not written")
                continue
            }
            if written != expected { found.append("\(path):\n--- expected\n\(expected)--- written\n\(written)") }
        }
        return found
    }

    @Test("the architecture comes from /bin/sh, links followed inside the root (fedora-001: a truncated amd64 ELF header)")
    func architecture() throws {
        let scratch = try TemporaryDirectory(prefix: "pvectl-lxc-arch")
        let root = try Self.prepare("test-fedora-001", in: scratch)
        #expect(LxcGuestSetup.detectArch(HostContainerFiles(root: root)) == "amd64")
        let other = try TemporaryDirectory(prefix: "pvectl-lxc-arch")
        let withoutShell = try Self.prepare("test-debian-001", in: other)
        #expect(FileManager.default.fileExists(atPath: withoutShell + "/etc/debian_version"))
        #expect(LxcGuestSetup.detectArch(HostContainerFiles(root: withoutShell)) == nil, "no /bin/sh: upstream then assumes amd64")
    }

    @Test("every case, two passes, byte for byte; the symlink trap is not written through")
    func setupCases() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.cases.path).filter { $0.hasPrefix("test-") }.sorted()
        #expect(names.count == 33, "pve-container has 33 setup cases")
        let trap = try String(contentsOf: Self.cases.appendingPathComponent("bad-path.txt"), encoding: .utf8)
        var passed = 0
        var failures: [String] = []
        var knownGaps: [String] = []
        for name in names {
            let scratch = try TemporaryDirectory(prefix: "pvectl-lxc-setup")
            let root = try Self.prepare(name, in: scratch)
            let text = try String(contentsOf: Self.cases.appendingPathComponent(name + "/config"), encoding: .utf8)
            let config = GuestConfig.parse(text, file: "/lxc/100.conf", kind: .lxc).0.main
            let days = Int(Date().timeIntervalSince1970 / 86400)
            var problems: [String] = []
            do {
                let setup = try LxcGuestSetup(config: config, files: HostContainerFiles(root: root))
                for pass in 1...2 {
                    var environment = LxcGuestSetup.Environment(
                        rootPassword: "$5$SALT$PASS", sshKeys: "ssh-rsa ABCDEFG ABC@DEF", nameservers: ["8.8.8.8", "8.8.8.9"],
                        searchDomains: ["proxmox.com"], makeUUID: { "00000000-0000-0000-0000-000000000000" }, days: days,
                        random: DRand48(seed: 0))
                    try setup.postCreate(&environment)
                    problems += Self.differences(name, root: root, days: days).map { "pass \(pass): \($0)" }
                }
            } catch {
                problems.append("setup failed: \(error)")
            }
            #expect(try String(contentsOfFile: scratch.path + "/bad-path.txt", encoding: .utf8) == trap, "\(name): the trap was written")
            if problems.isEmpty {
                passed += 1
            } else if name == "test-centos6-001" && problems.allSatisfy({ $0.contains(": /etc/init/") && $0.hasSuffix(": not written") }) {
                knownGaps.append("\(name): " + problems.joined(separator: "; "))
            } else {
                failures.append("\(name): " + problems.joined(separator: "\n"))
            }
        }
        Corpus.report("pve-container setup", passed: passed, total: names.count)
        #expect(passed >= 32)
        for failure in failures { Issue.record(Comment(rawValue: failure)) }
        // CentOS 6 (end of life in 2020): pve-container writes its own copies of the stock upstart tty jobs where the
        // template has none; pvectl does not carry those files, so such a container keeps the template's own jobs.
        for gap in knownGaps {
            withKnownIssue("CentOS 6 templates without upstart tty jobs get none from pvectl") { Issue.record(Comment(rawValue: gap)) }
        }
    }
}

/// CentOS 6 (upstart) templates ship their own tty jobs: the setup fixes them as pve-container's do (getty without
/// hangup, udev not started in the container), the same after a second run. The files here are the test's own.
@Suite("LXC guest setup: a CentOS 6 template's upstart jobs")
struct LxcCentOS6SetupTests {
    @Test("tty.conf's getty gets --nohangup, rc.sysinit's start_udev is commented out; twice is once")
    func upstartFixup() throws {
        let scratch = try TemporaryDirectory(prefix: "pvectl-lxc-centos6")
        let root = scratch.path
        for directory in ["/etc/init", "/etc/rc.d", "/etc/sysconfig"] {
            try FileManager.default.createDirectory(atPath: root + directory, withIntermediateDirectories: true)
        }
        let files: [String: String] = [
            "/etc/redhat-release": "CentOS release 6.10 (Final)\n",
            "/etc/init/tty.conf": "stop on runlevel [S016]\nrespawn\ninstance $TTY\nexec /sbin/mingetty $TTY\n",
            "/etc/rc.d/rc.sysinit": "#!/bin/bash\n/sbin/start_udev\necho started\n",
            "/etc/sysconfig/network": "NETWORKING=yes\n",
        ]
        for (path, text) in files { try text.write(toFile: root + path, atomically: false, encoding: .utf8) }
        let config = GuestConfig.parse("hostname: c6\nnet0: name=eth0,bridge=vmbr0,ip=dhcp\n", file: "/lxc/100.conf", kind: .lxc).0.main
        let setup = try LxcGuestSetup(config: config, files: HostContainerFiles(root: root))
        for _ in 1...2 {
            var environment = LxcGuestSetup.Environment(nameservers: ["192.0.2.53"], searchDomains: ["example.com"],
                                                        days: Int(Date().timeIntervalSince1970 / 86400))
            try setup.postCreate(&environment)
            #expect(try String(contentsOfFile: root + "/etc/init/tty.conf", encoding: .utf8)
                    == "stop on runlevel [S016]\nrespawn\ninstance $TTY\nexec /sbin/mingetty --nohangup $TTY\n")
            #expect(try String(contentsOfFile: root + "/etc/rc.d/rc.sysinit", encoding: .utf8) == "#!/bin/bash\n#/sbin/start_udev\necho started\n")
        }
    }
}
