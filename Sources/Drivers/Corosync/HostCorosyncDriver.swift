import Foundation
import Reconciler

/// corosync on this host: the file it reads, the version it runs (`corosync-cmapctl`), the node's addresses, and a
/// cluster-wide reload (`corosync-cfgtool -R`); the QDevice client (`corosync-qdevice`) with its certificates.
public struct HostCorosyncDriver: CorosyncDriver {
    public let installedPath: String
    /// Where `pvectl cluster qdevice setup` keeps the cluster's QNetd CA and client certificate (`/etc/pve/priv/qdevice`).
    public let sharedQdeviceDirectory: String

    /// Fixed by corosync-qdevice-net-certutil, which makes it.
    public static let qdeviceDatabase = "/etc/corosync/qdevice/net/nssdb"
    public static let qnetdCertificate = "qnetd-cacert.crt"
    public static let clientCertificate = "qdevice-net-node.p12"

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public init(installedPath: String = "/etc/corosync/corosync.conf", root: String = "/etc/pve") {
        self.installedPath = installedPath
        self.sharedQdeviceDirectory = root + "/priv/qdevice"
    }

    public func observe() async -> CorosyncObservation {
        let installed = try? String(contentsOfFile: installedPath, encoding: .utf8)
        var addresses: Set<String> = []
        if let json = try? await Command.check(["ip", "-json", "address", "show"]),
           let links = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]] {
            for link in links {
                for info in link["addr_info"] as? [[String: Any]] ?? [] { if let local = info["local"] as? String { addresses.insert(local) } }
            }
        }
        guard Command.locate("corosync-cfgtool") != nil, Command.locate("corosync-cmapctl") != nil else {
            return CorosyncObservation(installed: installed, runningVersion: nil, localAddresses: addresses,
                                       missing: MissingExecutable(name: "corosync-cfgtool").description)
        }
        // "totem.config_version (u64) = 3"; nothing when corosync does not run.
        var running: UInt64?
        if let result = try? await Command.run(["corosync-cmapctl", "-g", "totem.config_version"]), result.succeeded {
            running = result.output.split(separator: "=").last.flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        return CorosyncObservation(installed: installed, runningVersion: running, localAddresses: addresses, qdevice: await observeQdevice())
    }

    func observeQdevice() async -> QdeviceObservation {
        for tool in ["corosync-qdevice", "corosync-qdevice-tool", "corosync-qdevice-net-certutil", "certutil"] where Command.locate(tool) == nil {
            return QdeviceObservation(missing: MissingExecutable(name: tool).description)
        }
        let status = await Self.qdeviceStatus()
        return QdeviceObservation(certificatesShared: sharedDigest() != nil, databaseReady: await databaseCurrent(), running: status != nil,
                                  runningHost: status?.host)
    }

    /// corosync-qdevice's own directory (pvecm removes it whole).
    static let qdeviceDirectory = "/etc/corosync/qdevice"
    /// The digest of the shared certificates this node's database was made from: a setup made anew (another QNetd, new
    /// certificates) is imported again.
    static let importedMarker = "/etc/corosync/qdevice/net/pvectl-imported.sha256"

    func sharedDigest() -> String? {
        guard let authority = FileManager.default.contents(atPath: sharedQdeviceDirectory + "/" + Self.qnetdCertificate),
              let client = FileManager.default.contents(atPath: sharedQdeviceDirectory + "/" + Self.clientCertificate) else { return nil }
        return Digest.sha256Hex(authority + client)
    }

    /// The cluster's client certificate is in this node's database, imported from the shared certificates as they are now
    /// (or they are gone: what the node has is all there is).
    func databaseCurrent() async -> Bool {
        guard FileManager.default.fileExists(atPath: Self.qdeviceDatabase),
              (try? await Command.run(["certutil", "-L", "-d", Self.qdeviceDatabase, "-n", "Cluster Cert"]))?.succeeded == true else {
            return false
        }
        guard let digest = sharedDigest() else { return true }
        return (try? String(contentsOfFile: Self.importedMarker, encoding: .utf8)) == digest
    }

    /// `corosync-qdevice-tool -s` of a running corosync-qdevice: the QNetd host it talks to (without the port), nil when it
    /// does not run.
    static func qdeviceStatus() async -> (host: String?, state: String?)? {
        guard let result = try? await Command.run(["corosync-qdevice-tool", "-s"]), result.succeeded else { return nil }
        func field(_ name: String) -> String? {
            result.output.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix(name + ":") }
                .map { String($0.split(separator: ":", maxSplits: 1)[1]).trimmingCharacters(in: .whitespaces) }
        }
        // "QNetd host: 192.0.2.10:5403" (host, then the port after the last colon).
        let host = field("QNetd host").map { value -> String in
            guard let colon = value.lastIndex(of: ":") else { return value }
            return String(value[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        }
        return (host, field("State"))
    }

    static var underSystemd: Bool { FileManager.default.fileExists(atPath: "/run/systemd/system") }

    public func startQdevice(host: String?) async throws {
        try await Self.exclusively { try await startHoldingLock(host: host) }
    }

    /// `startQdevice` for a caller that holds the lock (`exclusively`) already.
    public func startHoldingLock(host: String?) async throws {
        let current = await databaseCurrent()
        if !current {
            guard let digest = sharedDigest() else {
                throw Failure(description: "\(sharedQdeviceDirectory) lacks the cluster's certificates: run pvectl cluster qdevice setup")
            }
            try? FileManager.default.removeItem(atPath: Self.qdeviceDatabase)
            try await Command.check(["corosync-qdevice-net-certutil", "-i", "-c", sharedQdeviceDirectory + "/" + Self.qnetdCertificate])
            try await Command.check(["corosync-qdevice-net-certutil", "-m", "-c", sharedQdeviceDirectory + "/" + Self.clientCertificate])
            try Data(digest.utf8).write(to: URL(fileURLWithPath: Self.importedMarker))
        }
        // corosync knows the device once the writing node's reload reached this one; corosync-qdevice reads it from there.
        try await Self.poll(seconds: 30, "corosync to know the quorum device (quorum.device.model)") { await Self.corosyncKnowsDevice() }
        if let status = await Self.qdeviceStatus() {
            // Already as wanted (setup and this node's loop may both get here).
            if current && status.host == host { return }
            try await stopRunningQdevice()
        }
        if Self.underSystemd {
            // Enabled as pvecm does: it votes again after a reboot, before any pvectl pass.
            try await Command.check(["systemctl", "enable", "corosync-qdevice"])
            try await Command.check(["systemctl", "restart", "corosync-qdevice"])
        } else {
            // It daemonizes (its standard descriptors on /dev/null); what stops it early shows as no answer.
            try await Command.check(["corosync-qdevice"])
        }
        try await Self.poll(seconds: 30, "corosync-qdevice to answer (corosync-qdevice -f -d shows why it stops)") {
            await Self.qdeviceStatus() != nil
        }
    }

    public func stopQdevice() async throws {
        try await Self.exclusively {
            // A plan read before a setup wrote the device is stale: what corosync runs with decides.
            if await Self.corosyncKnowsDevice() {
                throw Failure(description: "corosync still runs with the quorum device (its reload has not come through): not stopped yet")
            }
            try await stopHoldingLock()
        }
    }

    /// corosync runs with a quorum device in its configuration (cmap's `quorum.device.model`).
    static func corosyncKnowsDevice() async -> Bool {
        (try? await Command.run(["corosync-cmapctl", "-g", "quorum.device.model"]))?.succeeded == true
    }

    /// Waits (bounded) until corosync runs without the device: the reload after `pvectl cluster qdevice remove`.
    public static func waitForDeviceGone() async {
        try? await poll(seconds: 30, "corosync to run without the quorum device") { await !corosyncKnowsDevice() }
    }

    /// Stops corosync-qdevice and removes its directory, for a caller that holds the lock (`exclusively`).
    public func stopHoldingLock() async throws {
        if Self.underSystemd {
            try await Command.check(["systemctl", "disable", "--now", "corosync-qdevice"])
        } else if await Self.qdeviceStatus() != nil {
            try await stopRunningQdevice()
        }
        try? FileManager.default.removeItem(atPath: Self.qdeviceDirectory)
    }

    func stopRunningQdevice() async throws {
        if Self.underSystemd {
            try await Command.check(["systemctl", "stop", "corosync-qdevice"])
        } else {
            try await Command.check(["corosync-qdevice-tool", "-H"])
        }
        try await Self.poll(seconds: 30, "corosync-qdevice to stop") { await Self.qdeviceStatus() == nil }
    }

    /// One start or stop at a time on this node (`pvectl cluster qdevice setup` and the node's loop may meet here).
    public static func exclusively(_ body: () async throws -> Void) async throws {
        let descriptor = open("/run/pvectl-qdevice.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw Failure(description: "/run/pvectl-qdevice.lock: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        try await poll(seconds: 90, "the other start or stop of corosync-qdevice on this node") { flock(descriptor, LOCK_EX | LOCK_NB) == 0 }
        try await body()
    }

    /// Waits (bounded) for `condition`, or throws naming what did not happen.
    static func poll(seconds: Int, _ what: String, _ condition: () async -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if await condition() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw Failure(description: "waited \(seconds) s for \(what), in vain")
    }

    public func install(_ text: String) async throws {
        let directory = (installedPath as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try PushTarget(root: "/").writeAtomically(Data(text.utf8), to: installedPath, mode: 0o644)
    }

    public func reload() async throws {
        try await Command.check(["corosync-cfgtool", "-R"])
    }
}
