import ArgumentParser
import Drivers
import Foundation
import Logging
import Reconciler
import Resources
import ServiceLifecycle

/// `pvectl run`: the continuous loop. Level-triggered like a Kubernetes
/// controller: events only say which kind to look at again, and every pass
/// plans that kind from scratch and applies what differs.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Keep the system matching the desired state (the continuous loop).",
        discussion: """
        Applies every selected kind once, then again whenever something changes:
        a file under --root or the interfaces file (inotify), the kernel's links,
        addresses or routes (rtnetlink), a VM's QEMU reporting an event or
        exiting (on qmeventd's socket, /var/run/qmeventd.sock, unless qmeventd
        itself serves it), or every --resync seconds for what no event reports
        (a mount that went away). A kind that
        applied something has the kinds on top of it looked at again (network →
        VMs and firewall, storage → VMs, VMs → firewall).

        Files with errors freeze their resources (logged with file:line); the
        rest keeps converging. An edit of one VM's config plans that VM alone.
        A kind, or a VM, whose apply fails is retried with its own exponential
        backoff (1 s doubling to 5 min). Running VMs are never
        restarted: changes that need a restart stay pending. A staged
        interfaces.new is left for `pvectl apply`, as Proxmox leaves it for an
        explicit apply. --report-only KIND logs that kind's drift and changes
        nothing. SIGTERM or SIGINT ends the loop after the pass in progress.

        Examples:
          pvectl run
          pvectl run --only network --only firewall --resync 60
          pvectl run --report-only firewall
        """
    )

    @OptionGroup var options: ReconcileOptions

    @Option(name: .long, help: ArgumentHelp("Seconds between full passes that catch what no event reports.", valueName: "SECONDS"))
    var resync: Double = 300

    @Option(name: .customLong("report-only"), help: ArgumentHelp("Log this kind's drift and changes without applying them (repeatable).", valueName: "KIND"))
    var reportOnly: [String] = []

    @Flag(name: .long, help: "Also log every event and every pass that found nothing to do.")
    var verbose = false

    func validate() throws {
        guard resync >= 1 else { throw ValidationError("--resync \(resync): at least 1 second") }
        for kind in reportOnly where ControllerKind(rawValue: kind) == nil {
            throw ValidationError("--report-only \(kind): expected one of \(ControllerKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if options.restart { throw ValidationError("--restart is for `pvectl apply`: the loop never restarts running VMs") }
    }

    func run() async throws {
        let level: Logger.Level = verbose ? .debug : .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardOutput(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "pvectl")
        let controller = ReconcileLoop(options: options, resync: resync,
                                       reportOnly: Set(reportOnly.compactMap(ControllerKind.init(rawValue:))), logger: logger)
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [.init(service: controller)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// The loop as a service: watchers feed an inbox, a work queue decides
/// which kind runs next, each pass plans and applies one kind.
struct ReconcileLoop: Service {
    /// QMP events after which a VM's state may differ from its config.
    /// (Not RESET, STOP or RESUME: a guest rebooting or paused is still running,
    /// and a guest without a boot disk resets every few seconds.)
    static let qemuEventsToFollow: Set<String> = ["SHUTDOWN", "GUEST_PANICKED", "DEVICE_DELETED"]

    let options: ReconcileOptions
    let resync: Double
    let reportOnly: Set<ControllerKind>
    let logger: Logger

    func run() async throws {
        let selectors = try options.selectors
        let kinds = Set(ControllerKind.allCases.filter { ResourceSelector.wants(selectors, kind: $0.rawValue) })
        let root = URL(fileURLWithPath: options.tree.root).standardized.path
        let interfaces = URL(fileURLWithPath: options.tree.interfaces).standardized.path
        let inbox = ControllerInbox()
        // A key is followed when its kind is, and a resource key when the operator's --only takes that resource.
        let follows: @Sendable (ResourceKey) -> Bool = { key in
            kinds.contains(key.kind) && (key.name.map { ResourceSelector.select(selectors, kind: key.kind.rawValue, name: $0) } ?? true)
        }
        let onFileChange: @Sendable (String) -> Void = { [logger] path in
            let affected = ResourceKey.affected(byChangeOf: path, root: root, interfaces: interfaces).filter(follows)
            logger.debug("changed: \(path) → \(affected.sorted().map(\.description))")
            if !affected.isEmpty { Task { await inbox.post(keys: affected) } }
        }
        // Three levels below the root reach nodes/<node>/qemu-server/; of the interfaces file, its directory alone.
        let rootWatcher = try FileChangeWatcher(directories: [root], depth: 3, onChange: onFileChange)
        let interfacesWatcher = try FileChangeWatcher(directories: [(interfaces as NSString).deletingLastPathComponent], depth: 0,
                                                      onChange: onFileChange)
        let kernelKinds = kinds.intersection([.network, .qemu, .firewall])
        let netlinkWatcher = try NetworkChangeWatcher { [logger] in
            logger.debug("the kernel's network changed")
            Task { await inbox.post(kernelKinds) }
        }
        // QEMU's own events (qmeventd's socket): a guest powering off, a QEMU exiting.
        var qemuEvents: QemuEventListener?
        if kinds.contains(.qemu) {
            do {
                qemuEvents = try QemuEventListener { [logger] event in
                    switch event {
                    case .qmp(let name, let pid) where Self.qemuEventsToFollow.contains(name):
                        logger.info("QEMU event \(name) from pid \(pid)")
                    case .connected(let pid):
                        logger.info("following the events of QEMU pid \(pid)")
                        return
                    case .disconnected(let pid):
                        logger.info("QEMU pid \(pid) closed its event connection")
                    case .qmp:
                        return
                    }
                    Task { await inbox.post([ControllerKind.qemu]) }
                }
            } catch {
                logger.warning("not following QEMU events: \(error); a guest's own poweroff is seen at the next resync")
            }
        }
        defer {
            rootWatcher.stop()
            interfacesWatcher.stop()
            netlinkWatcher.stop()
            qemuEvents?.stop()
        }
        logger.info("watching", metadata: ["root": "\(root)", "interfaces": "\(interfaces)", "kinds": "\(kinds.sorted().map(\.rawValue))",
                                           "resync": "\(Int(resync)) s"])

        let store = StateStore(directory: options.stateDir)
        var record = LoopRecord(pid: getpid(), startedAt: Date())
        try store.save(record, as: "loop")
        await withGracefulShutdownHandler {
            var queue = WorkQueue<ResourceKey>()
            var nextResync = Date().addingTimeInterval(resync)
            var notedStaged: Data?
            var reported: [ResourceKey: [String]] = [:]
            let wholeKinds = kinds.map { ResourceKey($0) }
            queue.add(wholeKinds, now: Date())
            while await !inbox.isStopping {
                queue.add(await inbox.take().filter(follows), now: Date())
                if Date() >= nextResync {
                    queue.add(wholeKinds, now: Date())
                    nextResync = Date().addingTimeInterval(resync)
                }
                if let key = queue.next(now: Date()) {
                    // A pass of the whole kind covers the resources of it that wait.
                    if key.name == nil { queue.drop { $0.kind == key.kind && $0.name != nil } }
                    let outcome = await pass(key, kinds: kinds, queue: &queue, notedStaged: &notedStaged, reported: &reported)
                    record.kinds[key.kind.rawValue] = outcome
                    do { try store.save(record, as: "loop") } catch { logger.error("cannot record the loop's state: \(error)") }
                    continue
                }
                let wake = min(queue.nextWake ?? nextResync, nextResync)
                await inbox.wait(until: .now + .milliseconds(max(0, Int(wake.timeIntervalSinceNow * 1000))))
            }
            record.stoppedAt = Date()
            try? store.save(record, as: "loop")
            logger.info("stopped")
        } onGracefulShutdown: {
            Task { await inbox.stop() }
        }
    }

    /// Plans one kind, or one resource of it, from scratch and applies what differs; returns what it did.
    func pass(_ key: ResourceKey, kinds: Set<ControllerKind>, queue: inout WorkQueue<ResourceKey>,
              notedStaged: inout Data?, reported: inout [ResourceKey: [String]]) async -> LoopRecord.KindRecord {
        let started = Date()
        let kind = key.kind
        var passOptions = options
        let chosen = passOptions.only.filter { ResourceSelector($0)?.kind == kind.rawValue }
        passOptions.only = chosen.isEmpty ? [kind.rawValue] : chosen
        // One resource: planned alone, without counting as named by the operator (a VM is not started for an edit).
        if key.name != nil { passOptions.passScope = [key.description] }
        var log = logger
        log[metadataKey: "kind"] = "\(key)"
        do {
            let computation = try await passOptions.computePlan(reportProblems: false, stagedInterfaces: false)
            if kind == .network {
                let staged = options.tree.interfaces + ".new"
                let content = FileManager.default.contents(atPath: staged)
                if let content, content != notedStaged {
                    log.notice("\(staged) is staged and left alone: `pvectl apply` installs it")
                }
                notedStaged = content
            }
            let plan = computation.plan
            let blocked = plan.resources.filter { $0.action == .blocked }
            // Errors are logged when they change, not on every pass an event causes.
            let errors = computation.findings.filter { $0.severity == .error }.map(\.description)
            let warnings = computation.findings.filter { $0.severity == .warning }.map(\.description)
                + blocked.map { "\($0.id) blocked: \($0.message ?? "")" }
            if errors + warnings != reported[key] {
                for error in errors { log.error("\(error)") }
                for warning in warnings { log.warning("\(warning)") }
                if errors.isEmpty && warnings.isEmpty && !(reported[key] ?? []).isEmpty { log.notice("the errors are fixed") }
                reported[key] = errors + warnings
            }
            let note = blocked.isEmpty ? nil : "blocked: \(blocked.map(\.id).joined(separator: ", "))"
            let changing = plan.changingResources
            guard !changing.isEmpty else {
                log.debug("nothing to do")
                queue.succeeded(key)
                return LoopRecord.KindRecord(lastPassAt: started, outcome: "converged", message: note)
            }
            if reportOnly.contains(kind) {
                for resource in changing {
                    log.notice("drift (report only): \(resource.action.rawValue) \(resource.id)",
                               metadata: ["changes": "\(resource.changes.map { "\($0.field): \($0.old ?? "-") → \($0.new ?? "-")" })"])
                }
                queue.succeeded(key)
                return LoopRecord.KindRecord(lastPassAt: started, outcome: "reported",
                                             message: "drift: " + changing.map { "\($0.action.rawValue) \($0.id)" }.joined(separator: ", "))
            }
            log.info("applying \(changing.count) change(s): \(changing.map { "\($0.action.rawValue) \($0.id)" }.joined(separator: ", "))")
            let report = try await passOptions.applyKinds(computation, log: { [log] line in log.info("\(line)") })
            if report.failures.isEmpty {
                queue.succeeded(key)
                log.info("converged: \(report.applied.joined(separator: ", "))")
                queue.add(Set(kind.dependents).intersection(kinds).map { ResourceKey($0) }, now: Date())
                return LoopRecord.KindRecord(lastPassAt: started, outcome: "applied",
                                             message: ([report.applied.joined(separator: ", ")] + [note].compactMap { $0 }).joined(separator: "; "))
            }
            for failure in report.failures { log.error("\(failure)") }
            return retry(key, started: started, queue: &queue, log: log, message: report.failures.joined(separator: "; "))
        } catch {
            log.error("pass failed: \(error)")
            return retry(key, started: started, queue: &queue, log: log, message: "\(error)")
        }
    }

    func retry(_ key: ResourceKey, started: Date, queue: inout WorkQueue<ResourceKey>, log: Logger, message: String) -> LoopRecord.KindRecord {
        let delay = queue.failed(key, now: Date())
        log.warning("retrying in \(Int(delay.rounded(.up))) s (attempt \(queue.failureCount(key)))")
        return LoopRecord.KindRecord(lastPassAt: started, outcome: "failed", message: message, failures: queue.failureCount(key),
                                     retryAt: Date().addingTimeInterval(delay))
    }
}
