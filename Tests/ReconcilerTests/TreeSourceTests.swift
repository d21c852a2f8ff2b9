import Foundation
@testable import Reconciler
import Resources
import Testing

/// A tree held in memory: what DesiredState.load reads must come through its source, nothing else.
struct MemoryTreeSource: TreeSource {
    var files: [String: String]

    func fileExists(atPath path: String) -> Bool { files[path] != nil || isDirectory(path) }
    func contents(atPath path: String) -> Data? { files[path].map { Data($0.utf8) } }
    func contentsOfDirectory(atPath path: String) -> [String]? {
        guard isDirectory(path) else { return nil }
        let prefix = path + "/"
        return Array(Set(files.keys.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count).split(separator: "/")[0]) }))
    }
    func isSymbolicLink(atPath path: String) -> Bool { false }
    func isDirectory(_ path: String) -> Bool { files.keys.contains { $0.hasPrefix(path + "/") } }
}

@Suite("DesiredState reads every input through its tree source")
struct TreeSourceTests {
    static let storage = """
    cifs: nas
    \tserver 192.0.2.7
    \tshare vm
    \tusername backup

    cifs: open
    \tserver 192.0.2.8
    \tshare pub

    """

    @Test("CIFS password files and custom CPU models come from the source, with digests where a plan reads them")
    func inputsThroughTheSource() {
        let source = MemoryTreeSource(files: [
            "/pve/storage.cfg": Self.storage,
            "/pve/priv/storage/nas.pw": "secret\n",
            "/pve/virtual-guest/cpu-models.conf": "cpu-model: fast\n\treported-model kvm64\n",
            "/pve/nodes/pve1/qemu-server/100.conf": "memory: 512\ncpu: custom-fast\n",
        ])
        let state = DesiredState.load(root: "/pve", interfaces: nil, node: "pve1", source: source)
        #expect(state.storageCredentials == ["nas"])
        #expect(state.cpuModels?.sections.map(\.id) == ["fast"])
        #expect(state.digests.keys.contains("/pve/virtual-guest/cpu-models.conf"))
        #expect(state.guests.map(\.vmid) == [100])
        #expect(state.diagnostics.isEmpty, "\(state.diagnostics)")
    }
}
