import Foundation
import Testing
import TestSupport
@testable import ClusterFS

@Suite("The pve2 IPC service of a running pmxcfs",
       .enabled(if: PMXCFSProcess.unavailableReason == nil, Comment(rawValue: PMXCFSProcess.unavailableReason ?? "")))
struct IPCTests {
    static let pvectl = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path

    func text(_ result: (Int32, [UInt8])) -> String? { result.0 == 0 ? String(decoding: result.1, as: UTF8.self) : nil }

    @Test("version, members, guest list, configs, status, cluster log and guest config properties")
    func requests() throws {
        let daemon = try PMXCFSProcess()
        try daemon.start()
        #expect(writeFile(daemon.path("qemu-server/100.conf"), "cores: 2\nlock: backup\nname: web\n\n[snap]\nlock: rollback\n") == 0)
        #expect(writeFile(daemon.path("lxc/200.conf"), "hostname: ct\n") == 0)
        #expect(writeFile(daemon.path("storage.cfg"), "dir: local\n") == 0)
        let client = try IPCClient(service: daemon.ipcName)

        #expect(text(client.config("storage.cfg")) == "dir: local\n")
        #expect(client.config("nosuch.cfg").0 == -ENOENT)
        let vmlist = try #require(try JSONSerialization.jsonObject(with: Data(client.request(.getGuestList).1)) as? [String: Any])
        #expect((vmlist["ids"] as? [String: Any])?.keys.sorted() == ["100", "200"])
        #expect(text(client.request(.getGuestList)) == readFile(daemon.path(".vmlist")))
        #expect(try JSONSerialization.jsonObject(with: Data(client.request(.getClusterInfo).1)) as? [String: Any] != nil)
        #expect(client.request(.getFSVersion).0 == 0)
        #expect(client.request(.getFSVersion, body: [1]).0 == -EINVAL)

        // SET_STATUS stores under this node; GET_STATUS reads it back.
        var setBody = [UInt8](repeating: 0, count: 256)
        setBody.replaceSubrange(0..<8, with: Array("nodeip\0\0".utf8))
        #expect(client.request(.setStatus, body: setBody + Array("192.0.2.10".utf8)).0 == 0)
        var getBody = [UInt8](repeating: 0, count: 512)
        getBody.replaceSubrange(0..<6, with: Array("nodeip".utf8))
        getBody.replaceSubrange(256..<260, with: Array("pve1".utf8))
        #expect(text(client.request(.getStatus, body: getBody)) == "192.0.2.10")

        let ident = Array("root@pam".utf8) + [0], tag = Array("test".utf8) + [0]
        #expect(client.request(.logClusterMessage,
                               body: [6, UInt8(ident.count), UInt8(tag.count)] + ident + tag + Array("started".utf8) + [0]).0 == 0)
        let log = try #require(try JSONSerialization.jsonObject(with: Data(client.request(.getClusterLog,
            body: [UInt8](repeating: 0, count: 16) + Array("root@pam\0".utf8)).1)) as? [String: Any])
        let entries = try #require(log["data"] as? [[String: Any]])
        #expect(entries.first?["msg"] as? String == "started")
        #expect(entries.first?["tag"] as? String == "test")
        #expect(readFile(daemon.path(".clusterlog"))?.contains("started") == true)

        // Properties come from the main section only, not from snapshots.
        let propertiesBody: [UInt8] = withUnsafeBytes(of: UInt32(100).littleEndian, Array.init) + [2] + Array("lock\0name\0".utf8)
        let properties = try #require(try JSONSerialization.jsonObject(with: Data(client.request(.getGuestConfigProperties, body: propertiesBody).1))
            as? [String: [String: String]])
        #expect(properties["100"] == ["lock": "backup", "name": "web"])
        #expect(text(client.request(.getGuestConfigProperties, body: propertiesBody)) == "{\n\"100\":{\"lock\": \"backup\",\"name\": \"web\"}\n}\n")
        // Every guest (vmid 0); guests without the property are left out.
        let all: [UInt8] = withUnsafeBytes(of: UInt32(0).littleEndian, Array.init) + [1] + Array("hostname\0".utf8)
        #expect(text(client.request(.getGuestConfigProperties, body: all)) == "{\n\"200\":{\"hostname\": \"ct\"}\n}\n")
        let missing: [UInt8] = withUnsafeBytes(of: UInt32(999).littleEndian, Array.init) + [1] + Array("lock\0".utf8)
        #expect(client.request(.getGuestConfigProperties, body: missing).0 == -ENOENT)
        let badName: [UInt8] = withUnsafeBytes(of: UInt32(100).littleEndian, Array.init) + [1] + Array("Lock\0".utf8)
        #expect(client.request(.getGuestConfigProperties, body: badName).0 == -EINVAL)
    }

    @Test("access: www-data reads but not private files and cannot write; others are refused")
    func access() throws {
        let daemon = try PMXCFSProcess()
        try daemon.start()
        #expect(writeFile(daemon.path("priv/token.cfg"), "secret\n") == 0)
        #expect(writeFile(daemon.path("user.cfg"), "user:root@pam:1:0:::::\n") == 0)
        func run(_ user: String, _ group: String, _ arguments: [String]) -> (status: Int32, output: String, error: String) {
            NetworkNamespace.capture(["setpriv", "--reuid", user, "--regid", group, "--clear-groups", Self.pvectl, "cfs"]
                                     + arguments + ["--service", daemon.ipcName])
        }
        let publicRead = run("www-data", "www-data", ["get", "user.cfg"])
        #expect(publicRead.status == 0 && publicRead.output == "user:root@pam:1:0:::::\n", "\(publicRead)")
        let privateRead = run("www-data", "www-data", ["get", "priv/token.cfg"])
        #expect(privateRead.status == 1 && privateRead.error.contains("Operation not permitted"))
        let write = run("www-data", "www-data", ["log", "not allowed"])
        #expect(write.status == 1 && write.error.contains("Operation not permitted"))
        let stranger = run("nobody", "nogroup", ["get", "user.cfg"])
        #expect(stranger.status != 0)
    }
}
