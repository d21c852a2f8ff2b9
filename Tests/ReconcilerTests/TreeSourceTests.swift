import Foundation
@testable import Reconciler
import Resources
import Testing
import TestSupport

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
        let source = MemoryTree([
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
