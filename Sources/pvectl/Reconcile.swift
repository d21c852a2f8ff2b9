import ArgumentParser
import Drivers
import Foundation
import Reconciler
import Resources

/// The contract every kind shares: `--root`, `--interfaces`, `--node`,
/// `--state-dir`, `--only`, `--json`.
struct ReconcileOptions: ParsableArguments {
    @OptionGroup var tree: TreeOptions

    @Option(name: .long, help: ArgumentHelp("Where the reconciler keeps its last-applied records.", valueName: "DIR"))
    var stateDir: String = "/var/lib/pvectl"

    @Option(name: .long, help: ArgumentHelp("Limit to a kind or one resource: \(Kinds.names) (repeatable), e.g. network/vmbr0.",
                                            valueName: "KIND[/ID]"))
    var only: [String] = []

    @Flag(name: .long, help: "Machine-readable JSON output.")
    var json = false

    @Option(name: .customLong("qemu-accel"),
            help: ArgumentHelp("How this node runs VMs: kvm, tcg (emulation), or auto (KVM when /dev/kvm and CPU virtualization are present).",
                               valueName: "auto|kvm|tcg"))
    var qemuAccel: String = "auto"

    @Flag(name: .long, help: "Restart running guests whose changes need a restart (all of them, or those named with --only qemu/VMID or lxc/VMID).")
    var restart = false

    func validate() throws {
        guard ["auto", "kvm", "tcg"].contains(qemuAccel) else { throw ValidationError("--qemu-accel \(qemuAccel): expected auto, kvm or tcg") }
        _ = try selectors
    }

    var selectors: [ResourceSelector] {
        get throws {
            // Checked against the registered kinds' names, without making the kinds.
            try only.map { text in
                guard let selector = ResourceSelector(text), Kinds.catalog.contains(where: { $0.name == selector.kind }) else {
                    throw ValidationError("--only \(text): expected KIND[/ID] with KIND one of \(Kinds.names)")
                }
                return selector
            }
        }
    }

    /// The registered kinds with this run's settings.
    var engine: ReconcileEngine {
        get throws {
            let named = Set(only.compactMap(ResourceSelector.init).filter { [QemuReconciler.name, LxcReconciler.name].contains($0.kind) }
                .compactMap { $0.name.flatMap { Int($0) } })
            let settings = KindSettings(store: StateStore(directory: stateDir), qemuAcceleration: qemuAccel, restartGuests: restart ? named : nil,
                                        root: tree.root)
            return try ReconcileEngine(kinds: Kinds.registered(settings))
        }
    }

    /// The root may be missing for a network-only run: nothing under it is needed.
    func load(stagedInterfaces: Bool = true) throws -> DesiredState {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: tree.root, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw ValidationError("--root \(tree.root) is not a directory")
        }
        return DesiredState.load(root: tree.root, interfaces: tree.interfaces, node: tree.nodeName, source: tree.source,
                                 stagedInterfaces: stagedInterfaces)
    }

    /// Plans every selected kind, printing what `pvectl validate` and the plan found unless told not to.
    func computePlan(with engine: ReconcileEngine, reportProblems: Bool = true) async throws -> ReconcileEngine.Computation {
        let selectors = try self.selectors
        let computation = try await engine.plan(try load(), scope: selectors, named: selectors)
        if reportProblems { for finding in computation.findings { printError(finding.description) } }
        return computation
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

func printOut(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

var stdoutIsTerminal: Bool { isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil }

struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show what apply would change, without changing anything.",
        discussion: """
        One block per resource (network/vmbr0, storage/local,
        storage/local:100/vm-100-disk-0.qcow2): + create, ~ change (old → new with
        its change class: live, reload, restart, replace), - delete, ! blocked,
        ? unavailable on this node, each with the file line it comes from. A
        staged interfaces.new is planned when present.

        VMs (qemu/100): + start, - stop, ~ live change over QMP, and
        "~ (pending …)" for changes that wait for a restart (apply --restart).

        Exit codes with --detailed-exitcode: 0 no changes (pending restarts
        do not count), 2 changes, 1 error.

        Examples:
          pvectl plan
          pvectl plan --only network/vmbr0 --json
          pvectl plan --only storage/local-lvm
          pvectl plan --only firewall              (rule-level changes with file:line)
          pvectl plan --out /tmp/net.plan --detailed-exitcode
          pvectl plan --only qemu/100
        """
    )

    @OptionGroup var options: ReconcileOptions

    @Option(name: .long, help: ArgumentHelp("Save the plan (JSON, with input digests) for a later `pvectl apply PLANFILE`.", valueName: "PLANFILE"))
    var out: String?

    @Flag(name: .long, help: "Exit 2 when there are changes, 0 when there are none, 1 on error.")
    var detailedExitcode = false

    func run() async throws {
        let computation = try await options.computePlan(with: try options.engine)
        let plan = computation.plan
        if let out { try plan.jsonData().write(to: URL(fileURLWithPath: out), options: .atomic) }
        if options.json {
            printOut(String(decoding: try plan.jsonData(), as: UTF8.self) + "\n")
        } else {
            printOut(plan.render(colors: stdoutIsTerminal))
            if let out { printOut("Saved the plan to \(out); apply it with: pvectl apply \(out)\n") }
        }
        if !computation.problems.isEmpty || plan.summary.blocked > 0 { throw ExitCode(1) }
        if detailedExitcode && plan.hasChanges { throw ExitCode(2) }
    }
}

struct ApplyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Make the system match the desired state.",
        discussion: """
        Performs the plan with idempotent actions in dependency order, then plans
        again to confirm convergence. On a terminal it shows the plan and asks;
        elsewhere it needs --auto-approve. With a PLANFILE from `pvectl plan --out`,
        it refuses when any input or the system changed since the plan was made.
        A staged interfaces.new is moved into place after a successful apply.

        Examples:
          pvectl apply
          pvectl apply --auto-approve --only network
          pvectl apply --auto-approve --only storage
          pvectl apply --auto-approve --only firewall
          pvectl apply --auto-approve --only qemu/100            (start it, or change it live)
          pvectl apply --auto-approve --restart --only qemu/100  (also restart it for pending changes)
          pvectl apply /tmp/net.plan
        """
    )

    @OptionGroup var options: ReconcileOptions

    @Flag(name: .long, help: "Do not ask for confirmation.")
    var autoApprove = false

    @Argument(help: ArgumentHelp("A plan saved by `pvectl plan --out`.", valueName: "PLANFILE"))
    var planFile: String?

    func run() async throws {
        let engine = try options.engine
        let computation = try await options.computePlan(with: engine)
        let plan = computation.plan
        if let planFile {
            guard let data = FileManager.default.contents(atPath: planFile) else { throw ValidationError("cannot read \(planFile)") }
            let saved = try Plan.load(data)
            if let reason = ReconcileEngine.staleness(saved: saved, current: plan) {
                printError("error: the saved plan is out of date: \(reason). Run `pvectl plan` again.")
                throw ExitCode(1)
            }
        }
        if !computation.problems.isEmpty || plan.summary.blocked > 0 {
            printOut(plan.render(colors: stdoutIsTerminal))
            printError("error: nothing applied: fix the errors above first")
            throw ExitCode(1)
        }
        if !plan.hasChanges {
            printOut(plan.render(colors: stdoutIsTerminal))
            for line in try engine.finish(computation) { printOut(line + "\n") }
            return
        }
        printOut(plan.render(colors: stdoutIsTerminal))
        if !autoApprove && planFile == nil {
            guard isatty(STDIN_FILENO) == 1 else {
                printError("error: not on a terminal: pass --auto-approve (or apply a saved PLANFILE)")
                throw ExitCode(1)
            }
            printOut("\nApply these changes? Only 'yes' is accepted: ")
            guard readLine()?.trimmingCharacters(in: .whitespaces) == "yes" else {
                printOut("Apply cancelled.\n")
                throw ExitCode(1)
            }
        }
        let options = self.options
        let report = try await engine.apply(computation, reload: { try options.load() }, progress: { printOut($0 + "\n") })
        for failure in report.failures { printError("error: \(failure)") }
        if !report.failures.isEmpty { throw ExitCode(1) }
        // Level-triggered check: a fresh plan must be empty.
        let after = try await options.computePlan(with: engine, reportProblems: false).plan
        if after.hasChanges {
            printError("error: applied, but the system does not match yet:")
            printError(after.render(colors: false))
            throw ExitCode(1)
        }
        let converged = report.applied.count
        printOut("Apply complete: \(converged) resource\(converged == 1 ? "" : "s") converged.\n")
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show each managed resource's condition.",
        discussion: """
        Ready: applied and the system matches. Pending: the desired state or the
        system differs (see `pvectl plan`). Progressing: an apply started and did not
        finish. Degraded: the last apply failed. Blocked: the desired state has errors.
        Unavailable: this node cannot have it (a missing tool, or a kind this
        version does not manage). With `pvectl run` active, loop/KIND rows show
        its last pass: Watching, Blocked (waits for its input to change, not
        retried), Degraded (retrying with backoff) or Stopped.

        Examples:
          pvectl status
          pvectl status --only network --json
          pvectl status --only storage          (like pvesm status)
          pvectl status --only firewall
          pvectl status --only qemu             (each VM's run state, and KVM or TCG)
        """
    )

    @OptionGroup var options: ReconcileOptions

    @Flag(name: .long, help: "Every node's loop and last pass, from pmxcfs's status channel (run on any node of the cluster).")
    var cluster = false

    /// The continuous loop's last pass per kind, from its record in the state directory.
    func loopRows(_ selectors: [ResourceSelector]) -> [StatusRow] {
        guard let loop = try? StateStore(directory: options.stateDir).load("loop", as: LoopRecord.self) else { return [] }
        // The pid counts only while it is still a `pvectl run` (pids are reused).
        let commandLine = processArguments(loop.pid)
        let alive = loop.stoppedAt == nil && commandLine.first?.hasSuffix("pvectl") == true && commandLine.contains("run")
        let formatter = ISO8601DateFormatter()
        return loop.kinds.sorted { $0.key < $1.key }.filter { ResourceSelector.wants(selectors, kind: $0.key) }.map { kind, entry in
            var message = entry.outcome + (entry.message.map { $0.isEmpty ? "" : ": \($0)" } ?? "")
            if alive, let retry = entry.retryAt { message += "; next try \(formatter.string(from: retry))" }
            if !alive { message = "pvectl run (pid \(loop.pid)) is not running; its last pass: " + message }
            let condition = !alive ? "Stopped" : entry.failures > 0 ? "Degraded" : entry.outcome == "blocked" ? "Blocked"
                : entry.outcome == "held" ? "Held" : "Watching"
            return StatusRow(id: "loop/\(kind)", condition: condition, updatedAt: entry.lastPassAt, message: message)
        }
    }

    /// One storage as `pvesm status` shows it.
    struct StorageRow: Codable {
        var name: String
        var type: String
        var active: Bool
        var reason: String?
        var total: UInt64?
        var used: UInt64?
        var available: UInt64?
        var usedFraction: Double?
        /// As pvesm prints it: used/total in percent, two decimals.
        var percent: Double?
        var content: [String]

        enum CodingKeys: String, CodingKey {
            case name, type, active, reason, total, used, available, content, percent
            case usedFraction = "used_fraction"
        }
    }

    func run() async throws {
        if cluster {
            try clusterStatus()
            return
        }
        let engine = try options.engine
        let computation = try await options.computePlan(with: engine, reportProblems: false)
        let selectors = try options.selectors
        let storageOnly = !selectors.isEmpty && selectors.allSatisfy { $0.kind == StorageReconciler.name }
        let storageRows = (computation.computed(StorageReconciler.self)?.statuses ?? [])
            .filter {
                ResourceSelector.select(selectors.filter { $0.kind == StorageReconciler.name }, kind: StorageReconciler.name, name: $0.storage.id)
            }
            .map { status in
                let capacity = status.active ? status.observed?.capacity : nil
                return StorageRow(name: status.storage.id, type: status.storage.type, active: status.active, reason: status.reason,
                                  total: capacity?.total, used: capacity?.used, available: capacity?.available,
                                  usedFraction: capacity.flatMap { $0.total > 0 ? Double($0.used) / Double($0.total) : nil },
                                  percent: capacity.flatMap { $0.total > 0 ? (Double($0.used) * 10_000 / Double($0.total)).rounded() / 100 : nil },
                                  content: status.storage.content.sorted())
            }
        var rows = engine.status(computation)
        rows += loopRows(selectors)
        if selectors.isEmpty { rows += pushRows() }
        rows.sort { $0.id < $1.id }
        if options.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            encoder.dateEncodingStrategy = .iso8601
            let data = storageOnly ? try encoder.encode(storageRows) : try encoder.encode(rows)
            printOut(String(decoding: data, as: UTF8.self) + "\n")
            return
        }
        if storageOnly {
            printOut(Self.storageTable(storageRows))
            return
        }
        if rows.isEmpty {
            printOut("No managed resources.\n")
            return
        }
        let formatter = ISO8601DateFormatter()
        let idWidth = max(8, rows.map(\.id.count).max() ?? 0)
        let conditionWidth = max(13, (rows.map(\.condition.count).max() ?? 0) + 2)
        printOut("RESOURCE".padding(toLength: idWidth + 2, withPad: " ", startingAt: 0)
                 + "CONDITION".padding(toLength: conditionWidth, withPad: " ", startingAt: 0) + "GENERATION        UPDATED               DETAIL\n")
        for row in rows {
            var detail = row.message ?? ""
            if !row.pendingChanges.isEmpty { detail = "changes: " + Array(Set(row.pendingChanges)).sorted().joined(separator: ", ") }
            printOut(row.id.padding(toLength: idWidth + 2, withPad: " ", startingAt: 0)
                     + row.condition.padding(toLength: conditionWidth, withPad: " ", startingAt: 0)
                     + (row.generation ?? "-").padding(toLength: 18, withPad: " ", startingAt: 0)
                     + (row.updatedAt.map { formatter.string(from: $0) } ?? "-").padding(toLength: 22, withPad: " ", startingAt: 0)
                     + detail + "\n")
        }
        if !storageRows.isEmpty { printOut("\n" + Self.storageTable(storageRows)) }
    }

    /// `pvesm status`'s columns (sizes in KiB, as pvesm prints them), plus content and why a storage is not active.
    static func storageTable(_ rows: [StorageRow]) -> String {
        if rows.isEmpty { return "No storages.\n" }
        let nameWidth = max(4, rows.map(\.name.count).max() ?? 0) + 2
        func column(_ text: String, _ width: Int, right: Bool = false) -> String {
            text.count >= width ? text + " "
                : (right ? String(repeating: " ", count: width - text.count) + text : text + String(repeating: " ", count: width - text.count))
        }
        var out = column("Name", nameWidth) + column("Type", 10) + column("Status", 10) + column("Total", 14, right: true)
            + column("Used", 14, right: true) + column("Available", 14, right: true) + column("%", 9, right: true) + "  Content\n"
        for row in rows {
            let kib = { (value: UInt64?) in value.map { String($0 / 1024) } ?? "0" }
            let percent = row.usedFraction.map { String(format: "%.2f%%", $0 * 100) } ?? "0.00%"
            var line = column(row.name, nameWidth) + column(row.type, 10) + column(row.active ? "active" : "inactive", 10)
                + column(kib(row.total), 14, right: true) + column(kib(row.used), 14, right: true) + column(kib(row.available), 14, right: true)
                + column(percent, 9, right: true) + "  " + (row.content.isEmpty ? "none" : row.content.joined(separator: ","))
            if let reason = row.reason, !row.active { line += "  (\(reason))" }
            out += line + "\n"
        }
        return out
    }
}
