import ArgumentParser
import Drivers
import Foundation
import Reconciler
import Resources

struct PushCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "push",
        abstract: "Write a whole desired-state tree (a directory or a git repository) into /etc/pve.",
        discussion: """
        SOURCE mirrors /etc/pve (storage.cfg, nodes/<node>/qemu-server/<vmid>.conf,
        firewall/cluster.fw, ...; nodes/<node>/network/interfaces is the node's
        /etc/network/interfaces, staged there as interfaces.new). Other files of the
        source are not pushed. A git repository (its top level, a bare repository or
        a URL, mirrored under --state-dir) is read at --ref (HEAD by default) through
        git; a plain directory as it is.

        Shows per file the unified diff of what it would write, then the plan the
        resulting tree causes on this node. Values the system writes into guest
        configs (MACs, smbios1 uuid, vmgenid, lock, snapshots, [PENDING], unusedN;
        `system_owned` in specs/) are kept unless the repository sets them. The
        merged tree is validated first: any error writes nothing (exit 1). Guests
        with `lock:` are not touched. Files are written atomically, storages
        before guests, deletions last, under the lock priv/lock/pvectl-push.
        --prune deletes only files an earlier push wrote; priv/ is pushed only
        with --include-priv and never shown in a diff. The pushed revision is
        recorded in /etc/pve/pvectl/ (see `pvectl status`).

        Exit codes: 0 pushed or nothing to push, 1 error or refused, 2 with
        --check when /etc/pve differs from the source.

        Examples:
          pvectl push ~/pve-config --dry-run
          pvectl push ~/pve-config --ref origin/main --auto-approve
          pvectl push https://git.example/pve.git --ref main --out /tmp/push.plan
          pvectl push /tmp/push.plan                 (write a saved plan; refused if /etc/pve changed)
          pvectl push ~/pve-config --check           (exit 2 on drift)
        """
    )

    @Argument(help: ArgumentHelp("A directory, a git repository or URL, or a plan saved with --out.", valueName: "SOURCE"))
    var source: String

    @Option(name: .long, help: ArgumentHelp("The git ref to push (default HEAD).", valueName: "REF"))
    var ref: String?

    @Option(name: .long, help: ArgumentHelp("Where to push (default: --root, /etc/pve).", valueName: "DIR"))
    var to: String?

    @OptionGroup var options: ReconcileOptions

    @Flag(name: .long, help: "Show what would be written and planned; write nothing.")
    var dryRun = false

    @Option(name: .long, help: ArgumentHelp("Save the push plan for a later `pvectl push PLANFILE`.", valueName: "PLANFILE"))
    var out: String?

    @Flag(name: .long, help: "Delete files the source does not hold, if an earlier push wrote them.")
    var prune = false

    @Flag(name: .long, help: "Do not ask for confirmation.")
    var autoApprove = false

    @Flag(name: .customLong("include-priv"), help: "Also push priv/ (never shown in a diff).")
    var includePrivate = false

    @Flag(name: .long, help: "Exit 2 when /etc/pve differs from the source, 0 when it does not; write nothing.")
    var check = false

    var root: String { to ?? options.tree.root }

    var pusher: Pusher {
        Pusher(root: root, interfaces: options.tree.interfaces, node: options.tree.nodeName, mirrors: options.stateDir + "/sources",
               includePrivate: includePrivate, prune: prune)
    }

    struct Report: Encodable {
        struct File: Encodable {
            var path: String
            var action: String
            var diff: String?
            var kept: [String]
        }

        var revision: PushRecord.Revision
        var node: String
        var files: [File]
        var locked: [PushPlan.LockedGuest]
        var keptUnowned: [String]
        var unchanged: Int
        var ignored: [String]
        var uncommitted: [String]
        var problems: [String]
        var plan: Plan?
    }

    func run() async throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: source, isDirectory: &isDirectory), !isDirectory.boolValue {
            try writeSavedPlan()
            return
        }
        // The source is read (fetched) first; an approved push then plans under the lock, so that a second push waits and
        // plans on the first one's result.
        let read = try await PushSource.read(source, ref: ref, includePrivate: includePrivate, mirrors: options.stateDir + "/sources")
        let lock = autoApprove && !dryRun && !check && out == nil ? try pusher.lock() : nil
        defer { lock?.release() }
        let base = TreeOptions.source(root: root, ipcService: options.tree.ipcService, node: options.tree.nodeName)
        let preview = try pusher.preview(read, base: base)
        let plan = preview.plan
        let engine = try options.engine
        let selectors = try options.selectors
        // The plan of what the push changes: the resources its files concern (all of them for a whole kind's file).
        let scope = engine.scope(forChangesOf: preview.changedPaths, root: root, interfaces: options.tree.interfaces, within: selectors)
        let nodePlan = preview.errors.isEmpty && !scope.isEmpty ? try await engine.plan(preview.state, scope: scope, named: selectors).plan : nil
        if options.json {
            let files = plan.changes.map { change in
                Report.File(path: change.path, action: change.action.rawValue, diff: diff(change, colors: false), kept: change.kept)
            }
            let report = Report(revision: plan.revision, node: plan.node, files: files, locked: plan.locked, keptUnowned: plan.keptUnowned,
                                unchanged: plan.unchanged, ignored: preview.source.ignored, uncommitted: preview.source.uncommitted,
                                problems: preview.diagnostics.map(\.description), plan: nodePlan)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            printOut(String(decoding: try encoder.encode(report), as: UTF8.self) + "\n")
        } else {
            printOut(render(preview, nodePlan: nodePlan))
        }
        for diagnostic in preview.diagnostics { printError(diagnostic.description) }
        if !preview.errors.isEmpty {
            printError("error: nothing pushed: fix the errors above first")
            throw ExitCode(1)
        }
        if check { throw ExitCode(plan.hasChanges ? 2 : 0) }
        if let out {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            encoder.dateEncodingStrategy = .iso8601
            // It may hold priv/ files (--include-priv): readable by root alone.
            let saved = try encoder.encode(SavedPush(root: root, plan: plan, stagedInterfaces: preview.stagedInterfaces,
                                                     includePrivate: includePrivate))
            try PushTarget.writePrivately(saved, to: out)
            if !options.json { printOut("Saved the push plan to \(out); write it with: pvectl push \(out)\n") }
            return
        }
        if dryRun { return }
        if plan.hasChanges && !autoApprove {
            guard isatty(STDIN_FILENO) == 1 else {
                printError("error: not on a terminal: pass --auto-approve (or push a saved PLANFILE)")
                throw ExitCode(1)
            }
            printOut("\nPush these changes into \(root)? Only 'yes' is accepted: ")
            guard readLine()?.trimmingCharacters(in: .whitespaces) == "yes" else {
                printOut("Push cancelled.\n")
                throw ExitCode(1)
            }
        }
        let held = try lock ?? pusher.lock()
        defer { if lock == nil { held.release() } }
        try write(plan, stagedInterfaces: preview.stagedInterfaces, lock: held)
    }

    /// A saved push: the plan and where it was made for.
    struct SavedPush: Codable {
        var root: String
        var plan: PushPlan
        var stagedInterfaces: Data?
        var includePrivate: Bool
    }

    func writeSavedPlan() throws {
        guard let data = FileManager.default.contents(atPath: source) else { throw ValidationError("cannot read \(source)") }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        guard let saved = try? decoder.decode(SavedPush.self, from: data) else {
            throw ValidationError("\(source) is not a push plan saved by `pvectl push --out`")
        }
        let pusher = Pusher(root: to ?? saved.root, interfaces: options.tree.interfaces, node: saved.plan.node,
                            mirrors: options.stateDir + "/sources", includePrivate: saved.includePrivate, prune: prune)
        // The staged network file is the planning node's: on another node it is not this node's to stage.
        var staged = saved.stagedInterfaces
        if staged != nil && saved.plan.node != options.tree.nodeName {
            printError("note: the plan was made for node \(saved.plan.node): its interfaces file is not staged on \(options.tree.nodeName)")
            staged = nil
        }
        let lock = try pusher.lock()
        defer { lock.release() }
        try write(saved.plan, stagedInterfaces: staged, lock: lock, with: pusher)
    }

    func write(_ plan: PushPlan, stagedInterfaces: Data?, lock: PushLock, with pusher: Pusher? = nil) throws {
        do {
            try (pusher ?? self.pusher).write(plan, stagedInterfaces: stagedInterfaces, lock: lock) { printOut($0 + "\n") }
        } catch let stale as Pusher.Stale {
            printError("error: nothing pushed: \(stale). Run `pvectl push` again.")
            throw ExitCode(1)
        }
        let (writes, deletions) = plan.summary
        printOut("Push complete: \(plan.revision.summary): \(writes) written, \(deletions) deleted"
                 + (plan.locked.isEmpty ? "" : ", \(plan.locked.count) locked guest\(plan.locked.count == 1 ? "" : "s") left alone") + ".\n")
    }

    func diff(_ change: PushPlan.FileChange, colors: Bool) -> String? {
        if change.path.hasPrefix("priv/") { return nil }
        let old = change.current.map { String(decoding: $0, as: UTF8.self) } ?? ""
        let new = change.content.map { String(decoding: $0, as: UTF8.self) } ?? ""
        let absolute = (root.hasSuffix("/") ? root : root + "/") + change.path
        return UnifiedDiff.render(old: old, new: new, oldName: change.action == .create ? "/dev/null" : absolute,
                                  newName: change.action == .delete ? "/dev/null" : absolute, colors: colors)
    }

    func render(_ preview: Pusher.Preview, nodePlan: Plan?) -> String {
        let plan = preview.plan
        let colors = stdoutIsTerminal
        func paint(_ text: String, _ code: String) -> String { colors ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text }
        var out = "Source: \(plan.revision.summary)\nTarget: \(root) (node \(plan.node))\n\n"
        for path in preview.source.uncommitted {
            out += paint("note: ", "36") + "\(path) has changes that are not committed: the commit is pushed, not them\n"
        }
        for change in plan.changes {
            let (symbol, color, what) = switch change.action {
            case .create: ("+", "32", "new file")
            case .update: ("~", "33", "changed")
            case .delete: ("-", "31", "deleted: an earlier push wrote it and the source no longer has it")
            }
            out += paint("\(symbol) \(change.path)", color) + " (\(what))\n"
            if !change.kept.isEmpty { out += "    kept from \(root): \(change.kept.joined(separator: ", "))\n" }
            if let diff = diff(change, colors: colors) {
                out += diff.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map { "    " + $0 }.joined(separator: "\n") + "\n"
            } else {
                out += "    (priv/: contents not shown)\n"
            }
        }
        for guest in plan.locked {
            out += paint("! \(guest.path)", "35") + " (locked: \(guest.lock); not touched, push again when the lock is gone)\n"
        }
        for path in plan.keptUnowned { out += "  \(path) stays: not in the source, and no push wrote it\n" }
        let (writes, deletions) = plan.summary
        out += plan.hasChanges || !plan.locked.isEmpty ? "\n" : ""
        out += plan.hasChanges
            ? "Push: \(writes) to write, \(deletions) to delete, \(plan.unchanged) unchanged"
            : "Nothing to push: \(root) matches the source (\(plan.unchanged) file\(plan.unchanged == 1 ? "" : "s"))"
        out += plan.locked.isEmpty ? ".\n" : "; \(plan.locked.count) locked.\n"
        if !preview.source.ignored.isEmpty {
            let count = preview.source.ignored.count
            out += "(\(count) file\(count == 1 ? "" : "s") of the source \(count == 1 ? "is not an /etc/pve file" : "are not /etc/pve files"), "
                + "not pushed: \(preview.source.ignored.prefix(5).joined(separator: ", "))\(count > 5 ? ", ..." : ""))\n"
        }
        if let nodePlan {
            out += "\nPlan of the pushed tree on this node (\(plan.node)):\n" + nodePlan.render(colors: colors)
        } else if preview.errors.isEmpty {
            out += preview.changedPaths.isEmpty ? "\nThe push changes no file: nothing to plan on this node.\n"
                : "\nThe files it writes concern no resource this node manages (see `pvectl plan` after the push).\n"
        }
        return out
    }
}

extension StatusCommand {
    /// The last push's revision and how /etc/pve moved since (by hand or by the system); and pull mode's last poll.
    func pushRows() -> [StatusRow] {
        let pusher = Pusher(root: options.tree.root, interfaces: options.tree.interfaces, node: options.tree.nodeName,
                            mirrors: options.stateDir + "/sources", includePrivate: false, prune: false)
        var rows: [StatusRow] = []
        do {
            if let (record, drift) = try pusher.drift() {
                let generation = record.revision.commit.map { String($0.prefix(12)) } ?? "sha256:" + record.revision.digest.prefix(8)
                let summary = "\(record.revision.summary), pushed from \(record.node)"
                let byHand = drift.filter { $0.change != .bySystem }.count
                let since = drift.isEmpty ? "" : "; \(drift.count) file\(drift.count == 1 ? "" : "s") changed since"
                rows.append(StatusRow(id: "push", condition: byHand > 0 ? "Drifted" : "Synced", generation: generation, updatedAt: record.pushedAt,
                                      message: summary + since))
                rows += drift.map { StatusRow(id: "push/\($0.path)", condition: $0.change == .bySystem ? "Synced" : "Drifted",
                                              message: $0.change.rawValue) }
            }
        } catch {
            rows.append(StatusRow(id: "push", condition: "Degraded", message: "\(error)"))
        }
        if let pull = try? StateStore(directory: options.stateDir).load("pull", as: PullRecord.self) { rows.append(pull.row) }
        return rows
    }
}
