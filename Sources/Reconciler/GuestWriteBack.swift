import Foundation
import Resources

/// What apply writes back into a guest config, as Proxmox rewrites it: values it generated (MACs, SMBIOS UUID) and
/// pending changes that took effect, moved into the main section. Shared by the VM and container kinds.
struct GuestWriteBack {
    let guest: DesiredState.Guest
    /// The effective config plus the generated values.
    let desired: [String: String]
    /// The file's digest when it was read: the write is refused if someone changed it since.
    let digest: String?

    /// Keys set or deleted in the pending section.
    var pendingKeys: Set<String> {
        Set((guest.config.pending?.effectiveEntries.map(\.key) ?? []).filter { $0 != "delete" } + guest.config.pendingDeletions)
    }

    /// The rewritten file with `generated` keys and the `fromPending` keys taken into the main section; nil when
    /// nothing changes.
    func file(generated: Set<String>, fromPending: Set<String>) -> (path: String, text: String, digest: String?)? {
        let keys = generated.union(fromPending)
        let values = Dictionary(uniqueKeysWithValues: keys.compactMap { key in desired[key].map { (key, $0) } })
        let removed = keys.filter { desired[$0] == nil }
        guard !values.isEmpty || !removed.isEmpty || !fromPending.isEmpty else { return nil }
        return (guest.path, QemuReconciler.rewritten(guest.config, values: values, removing: Array(removed), fromPending: fromPending), digest)
    }

    /// The generated values as plan changes (class none: nothing in the guest changes for them).
    static func changes(generated: [String: String], effective: [String: String], guest: DesiredState.Guest) -> [PlannedChange] {
        generated.keys.sorted().map { key in
            PlannedChange(field: key, old: effective[key], new: generated[key], changeClass: .none, source: guest.config.main.entry(key)?.location)
        }
    }
}
