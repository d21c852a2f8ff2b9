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

    @Option(name: .long, help: ArgumentHelp("Limit to a kind or one resource: network, storage, qemu, lxc, firewall (repeatable), e.g. network/vmbr0.", valueName: "KIND[/ID]"))
    var only: [String] = []

    @Flag(name: .long, help: "Machine-readable JSON output.")
    var json = false

    @Option(name: .customLong("qemu-accel"), help: ArgumentHelp("How this node runs VMs: kvm, tcg (emulation), or auto (KVM when /dev/kvm and CPU virtualization are present).", valueName: "auto|kvm|tcg"))
    var qemuAccel: String = "auto"

    @Flag(name: .long, help: "Restart running VMs whose changes need a restart (all of them, or those named with --only qemu/VMID).")
    var restart = false

    func validate() throws {
        guard ["auto", "kvm", "tcg"].contains(qemuAccel) else { throw ValidationError("--qemu-accel \(qemuAccel): expected auto, kvm or tcg") }
    }

    /// What one pass of `pvectl run` looks at (`qemu/100` after an edit of its config), narrower than what the
    /// operator selected; nil outside the loop. It never names a VM: `--only qemu/100` from the operator starts VM 100,
    /// a pass for it does not.
    var passScope: [String]?

    /// What this run plans: the loop's pass scope, or the operator's `--only`.
    var scope: [ResourceSelector] {
        get throws { try passScope.map { $0.compactMap(ResourceSelector.init) } ?? selectors }
    }

    var selectors: [ResourceSelector] {
        get throws {
            try only.map { text in
                guard let selector = ResourceSelector(text) else {
                    throw ValidationError("--only \(text): expected KIND[/ID] with KIND one of \(ResourceSelector.kinds.joined(separator: ", "))")
                }
                return selector
            }
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

    var reconciler: NetworkReconciler {
        NetworkReconciler(driver: KernelNetworkDriver(), store: StateStore(directory: stateDir))
    }

    var storageReconciler: StorageReconciler {
        StorageReconciler(driver: HostStorageDriver(), store: StateStore(directory: stateDir))
    }

    var firewallReconciler: FirewallReconciler {
        FirewallReconciler(driver: NftablesFirewallDriver(), store: StateStore(directory: stateDir))
    }

    var qemuReconciler: QemuReconciler {
        get throws {
            let named = Set(try selectors.filter { $0.kind == "qemu" }.compactMap { $0.name.flatMap { Int($0) } })
            return QemuReconciler(driver: QemuProcessDriver(), store: StateStore(directory: stateDir), accelerationSetting: qemuAccel,
                                  restart: restart ? named : nil)
        }
    }

    /// Every selected kind's view of one run.
    struct Computation {
        var plan: Plan
        var network: NetworkReconciler.Computed
        var storage: StorageReconciler.Computed
        var firewall: FirewallReconciler.Computed
        var qemu: QemuReconciler.Computed
        var state: DesiredState
        /// `pvectl validate`'s diagnostics for the files of the selected kinds.
        var checks: [Diagnostic]

        /// Errors: plan exits 1 and apply refuses, as validate exits 1, on any of them (`pvectl run` instead goes on
        /// with what they do not touch). Each finding said once: a check and a kind may reach the same one.
        var problems: [Diagnostic] { (checks.filter { $0.severity == .error } + kindProblems).saidOnce() }

        /// Everything to tell the operator: the checks `pvectl validate` makes, warnings included, then what only a
        /// plan finds (the system's side); each finding said once.
        var findings: [Diagnostic] { (checks + kindProblems).saidOnce() }

        /// What the kinds' plans found.
        var kindProblems: [Diagnostic] { network.problems + storage.problems + firewall.problems + qemu.problems }
    }

    /// Computes the plan of every selected kind.
    func computePlan(reportProblems: Bool = true, stagedInterfaces: Bool = true) async throws -> Computation {
        let state = try load(stagedInterfaces: stagedInterfaces)
        let selectors = try scope
        let namedVMs = Set(try self.selectors.filter { $0.kind == "qemu" }.compactMap { $0.name.flatMap { Int($0) } })
        var network = NetworkReconciler.Computed()
        if ResourceSelector.wants(selectors, kind: "network") {
            network = try await reconciler.compute(state, only: selectors)
        }
        var storage = StorageReconciler.Computed()
        if ResourceSelector.wants(selectors, kind: "storage") {
            storage = try await storageReconciler.compute(state, only: selectors)
        }
        var firewall = FirewallReconciler.Computed()
        if ResourceSelector.wants(selectors, kind: "firewall") {
            firewall = try await firewallReconciler.compute(state, only: selectors)
        }
        var qemu = QemuReconciler.Computed()
        if ResourceSelector.wants(selectors, kind: "qemu") {
            // A VM cannot start with a disk on a storage this node does not serve.
            var inactive: [String: String] = [:]
            let storageForVMs = ResourceSelector.wants(selectors, kind: "storage") ? storage
                : try await storageReconciler.compute(state, only: [ResourceSelector("storage")!])
            // Storages this same apply creates or activates first are not in the way.
            let fixedFirst = ResourceSelector.wants(selectors, kind: "storage")
                ? Set(storage.resources.filter { [.create, .update].contains($0.action) && !$0.name.contains(":") }.map(\.name)) : []
            for status in storageForVMs.statuses where !status.active && !fixedFirst.contains(status.storage.id) {
                inactive[status.storage.id] = status.reason ?? "inactive"
            }
            qemu = try await qemuReconciler.compute(state, only: selectors, cpuModels: state.cpuModels, inactiveStorages: inactive,
                                                    named: namedVMs)
        }
        let checks = TreeValidator.validate(state).filter { concernsSelection($0, selectors: selectors) }
        let plan = Plan(node: tree.nodeName, inputs: state.digests,
                        resources: network.resources + storage.resources + firewall.resources + qemu.resources
                            + UnmanagedKinds.plan(state, only: selectors),
                        notes: firewall.notes + qemu.notes)
        let computation = Computation(plan: plan, network: network, storage: storage, firewall: firewall, qemu: qemu, state: state,
                                      checks: checks)
        if reportProblems { for finding in computation.findings { printError(finding.description) } }
        return computation
    }

    /// Whether a diagnostic is about a file of a selected kind (all of them without --only).
    func concernsSelection(_ diagnostic: Diagnostic, selectors: [ResourceSelector]) -> Bool {
        guard !selectors.isEmpty else { return true }
        let file = diagnostic.location.file
        var kinds = Set(ControllerKind.affected(byChangeOf: file, root: tree.root, interfaces: tree.interfaces).map(\.rawValue))
        if file.contains("/lxc/") { kinds.insert("lxc") }
        return selectors.contains { kinds.contains($0.kind) }
    }

    /// What one apply did: the resources it converged, and failures as
    /// `kind/id: message`. The first kind with a failure stops the rest (a VM
    /// must not start on a bridge or storage that did not come up).
    struct ApplyReport {
        var applied: [String] = []
        var failures: [String] = []
    }

    /// Applies a computation kind by kind: network, then storage (reached over
    /// it), VMs (on both), the firewall last (it guards VM NICs, so it is
    /// planned again when VMs changed). `beforeStorage` runs once the network
    /// succeeded (apply installs a staged interfaces.new there).
    func applyKinds(_ computation: Computation, log: @escaping @Sendable (String) -> Void,
                    beforeStorage: () throws -> Void = {}) async throws -> ApplyReport {
        var report = ApplyReport()
        let network = try await reconciler.apply(computation.network, log: log)
        report.applied += network.applied.map { "network/\($0)" }
        report.failures += network.failed.map { "network/\($0.name): \($0.message)" }
        guard report.failures.isEmpty else { return report }
        try beforeStorage()
        let storage = try await storageReconciler.apply(computation.storage, log: log)
        report.applied += storage.applied.map { "storage/\($0)" }
        report.failures += storage.failed.map { "storage/\($0.id): \($0.message)" }
        guard report.failures.isEmpty else { return report }
        let qemu = try await qemuReconciler.apply(computation.qemu, progress: log)
        report.applied += qemu.applied.map { "qemu/\($0)" }
        report.failures += qemu.failed.map { "qemu/\($0.vmid): \($0.message)" }
        guard report.failures.isEmpty else { return report }
        var firewallComputed = computation.firewall
        let selectors = try scope
        if !qemu.applied.isEmpty && ResourceSelector.wants(selectors, kind: "firewall") {
            let staged = computation.state.interfacesPath?.hasSuffix(".new") ?? true
            firewallComputed = try await firewallReconciler.compute(try load(stagedInterfaces: staged), only: selectors)
        }
        let firewall = try await firewallReconciler.apply(firewallComputed, progress: log)
        report.applied += firewall.applied.map { "firewall/\($0)" }
        report.failures += firewall.failed.map { "firewall/\($0.id): \($0.message)" }
        return report
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
        let computation = try await options.computePlan()
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
        let computation = try await options.computePlan()
        let (plan, state) = (computation.plan, computation.state)
        if let planFile {
            guard let data = FileManager.default.contents(atPath: planFile) else { throw ValidationError("cannot read \(planFile)") }
            let saved = try Plan.load(data)
            if let reason = staleness(saved: saved, current: plan) {
                printError("error: the saved plan is out of date: \(reason). Run `pvectl plan` again.")
                throw ExitCode(1)
            }
        }
        if !computation.problems.isEmpty || plan.summary.blocked > 0 {
            printOut(plan.render(colors: stdoutIsTerminal))
            printError("error: nothing applied: fix the errors above first")
            throw ExitCode(1)
        }
        let stagedInterfaces = state.interfacesPath.flatMap { $0.hasSuffix(".new") ? $0 : nil }
        if !plan.hasChanges {
            printOut(plan.render(colors: stdoutIsTerminal))
            try installStaged(stagedInterfaces)
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
        let report = try await options.applyKinds(computation, log: { printOut($0 + "\n") }, beforeStorage: { try installStaged(stagedInterfaces) })
        for failure in report.failures { printError("error: \(failure)") }
        if !report.failures.isEmpty { throw ExitCode(1) }
        // Level-triggered check: a fresh plan must be empty.
        let after = try await options.computePlan(reportProblems: false).plan
        if after.hasChanges {
            printError("error: applied, but the system does not match yet:")
            printError(after.render(colors: false))
            throw ExitCode(1)
        }
        let converged = report.applied.count
        printOut("Apply complete: \(converged) resource\(converged == 1 ? "" : "s") converged.\n")
    }

    /// Why a saved plan no longer holds, or nil.
    func staleness(saved: Plan, current: Plan) -> String? {
        if saved.node != current.node { return "it was made for node \(saved.node)" }
        for path in Set(saved.inputs.keys).union(current.inputs.keys).sorted() where saved.inputs[path] != current.inputs[path] {
            return "\(path) changed"
        }
        guard saved.resources != current.resources else { return nil }
        // Name what moved, so the operator can tell a concurrent change from their own.
        let before = Dictionary(saved.resources.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        let after = Dictionary(current.resources.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        for id in Set(before.keys).union(after.keys).sorted() where before[id] != after[id] {
            let was = before[id].map { "planned \($0.action.rawValue)" } ?? "not planned"
            let now = after[id].map { "now \($0.action.rawValue)" } ?? "now nothing to do"
            let detail = before[id]?.action == after[id]?.action ? "its changes differ" : "\(was), \(now)"
            return "the system changed: \(id) (\(detail))"
        }
        return "the system changed: the order of the planned resources differs"
    }

    func installStaged(_ staged: String?) throws {
        guard let staged else { return }
        let target = String(staged.dropLast(4))
        if rename(staged, target) != 0 {
            throw ValidationError("cannot move \(staged) to \(target): \(String(cString: strerror(errno)))")
        }
        printOut("Installed \(staged) as \(target).\n")
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

        Examples:
          pvectl status
          pvectl status --only network --json
          pvectl status --only storage          (like pvesm status)
          pvectl status --only firewall
          pvectl status --only qemu             (each VM's run state, and KVM or TCG)
        """
    )

    @OptionGroup var options: ReconcileOptions

    struct Row: Codable {
        var id: String
        var condition: String
        var generation: String?
        var updatedAt: Date?
        var message: String?
        var pendingChanges: [String]

        enum CodingKeys: String, CodingKey {
            case id, condition, generation, message
            case updatedAt = "updated_at"
            case pendingChanges = "pending_changes"
        }
    }

    /// The continuous loop's last pass per kind, from its record in the state directory.
    func loopRows(_ selectors: [ResourceSelector]) -> [Row] {
        guard let loop = try? StateStore(directory: options.stateDir).load("loop", as: LoopRecord.self) else { return [] }
        // The pid counts only while it is still a `pvectl run` (pids are reused).
        let commandLine = processArguments(loop.pid)
        let alive = loop.stoppedAt == nil && commandLine.first?.hasSuffix("pvectl") == true && commandLine.contains("run")
        let formatter = ISO8601DateFormatter()
        return loop.kinds.sorted { $0.key < $1.key }.filter { ResourceSelector.wants(selectors, kind: $0.key) }.map { kind, entry in
            var message = entry.outcome + (entry.message.map { $0.isEmpty ? "" : ": \($0)" } ?? "")
            if alive, let retry = entry.retryAt { message += "; next try \(formatter.string(from: retry))" }
            if !alive { message = "pvectl run (pid \(loop.pid)) is not running; its last pass: " + message }
            return Row(id: "loop/\(kind)", condition: !alive ? "Stopped" : entry.failures > 0 ? "Degraded" : "Watching",
                       updatedAt: entry.lastPassAt, message: message, pendingChanges: [])
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
        let computation = try await options.computePlan(reportProblems: false)
        let plan = computation.plan
        let network = computation.network
        let selectors = try options.selectors
        let storageOnly = !selectors.isEmpty && selectors.allSatisfy { $0.kind == "storage" }
        let storageRows = computation.storage.statuses
            .filter { ResourceSelector.select(selectors.filter { $0.kind == "storage" }, kind: "storage", name: $0.storage.id) }
            .map { status in
                let capacity = status.active ? status.observed?.capacity : nil
                return StorageRow(name: status.storage.id, type: status.storage.type, active: status.active, reason: status.reason,
                                  total: capacity?.total, used: capacity?.used, available: capacity?.available,
                                  usedFraction: capacity.flatMap { $0.total > 0 ? Double($0.used) / Double($0.total) : nil },
                                  percent: capacity.flatMap { $0.total > 0 ? (Double($0.used) * 10_000 / Double($0.total)).rounded() / 100 : nil },
                                  content: status.storage.content.sorted())
            }
        let pending = Dictionary(plan.resources.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var rows: [Row] = []
        if ResourceSelector.wants(selectors, kind: "network") {
            var names = Set(network.desired.map(\.name)).union(network.records.interfaces.keys)
            names.formUnion(plan.resources.filter { $0.kind == "network" }.map(\.name))
            for name in names.sorted() {
                let record = network.records.interfaces[name]
                let change = pending["network/" + name]
                let condition: String
                var message = record?.message
                switch (record?.status, change) {
                case (_, let change?) where change.action == .blocked:
                    condition = "Blocked"
                    message = change.message
                case (.inFlight?, _): condition = "Progressing"
                case (.failed?, _): condition = "Degraded"
                case (_, _?): condition = "Pending"
                case (.applied?, nil): condition = "Ready"
                case (nil, nil): condition = "Ready"
                }
                rows.append(Row(id: "network/\(name)", condition: condition, generation: record?.generation, updatedAt: record?.updatedAt,
                                message: message, pendingChanges: change?.changes.map(\.field) ?? []))
            }
        }
        for resource in plan.resources where resource.kind == "storage" && !rows.contains(where: { $0.id == resource.id }) {
            let condition = switch resource.action {
            case .blocked: "Blocked"
            case .unavailable: "Unavailable"
            default: "Pending"
            }
            rows.append(Row(id: resource.id, condition: condition, message: resource.message, pendingChanges: resource.changes.map(\.field)))
        }
        for resource in plan.resources where resource.kind == "firewall" {
            let condition = switch resource.action {
            case .blocked: "Blocked"
            case .unavailable: "Unavailable"
            default: "Pending"
            }
            rows.append(Row(id: resource.id, condition: condition, message: resource.message, pendingChanges: resource.changes.map(\.field)))
        }
        let firewall = computation.firewall
        if ResourceSelector.wants(selectors, kind: "firewall"), pending["firewall/ruleset"] == nil, firewall.records.scriptDigest != nil,
           firewall.compiled?.enabled == true {
            rows.append(Row(id: "firewall/ruleset", condition: "Ready", generation: firewall.records.scriptDigest.map { String($0.prefix(12)) },
                            updatedAt: firewall.records.appliedAt,
                            message: "\(firewall.records.rules.count) rules loaded; \(firewall.records.ports.count) guest NIC(s) behind firewall bridges",
                            pendingChanges: []))
        }
        if ResourceSelector.wants(selectors, kind: "qemu"), let acceleration = computation.qemu.acceleration {
            rows.append(Row(id: "qemu/accelerator", condition: acceleration.kvm ? "KVM" : "TCG", message: acceleration.reason, pendingChanges: []))
            for status in computation.qemu.statuses {
                let id = "qemu/\(status.vmid)"
                let change = pending[id]
                let record = computation.qemu.records.vms[String(status.vmid)]
                var condition: String
                switch status.state {
                case .running(_, "shutdown"): condition = "Stopped"
                case .running: condition = "Running"
                case .stopped: condition = "Stopped"
                case .crashed: condition = "Crashed"
                }
                switch change?.action {
                case .blocked?: condition = "Blocked"
                case .pending?: condition += ", restart pending"
                case nil: break
                default: condition += ", changes pending"
                }
                var message = "\(status.name.map { $0 + ": " } ?? "")\(status.state); should be \(status.intent)"
                if let record { message += "; \(record.accelerator.uppercased())" }
                rows.append(Row(id: id, condition: condition, updatedAt: record?.startedAt, message: message,
                                pendingChanges: change?.changes.map(\.field) ?? []))
            }
        }
        for resource in plan.resources where resource.kind == "qemu" && !rows.contains(where: { $0.id == resource.id }) {
            rows.append(Row(id: resource.id, condition: resource.action == .blocked ? "Blocked" : "Pending", message: resource.message,
                            pendingChanges: resource.changes.map(\.field)))
        }
        for storage in storageRows where pending["storage/" + storage.name] == nil {
            rows.append(Row(id: "storage/" + storage.name, condition: storage.active ? "Ready" : "Inactive", message: storage.reason, pendingChanges: []))
        }
        rows += loopRows(selectors)
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
            text.count >= width ? text + " " : (right ? String(repeating: " ", count: width - text.count) + text : text + String(repeating: " ", count: width - text.count))
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
