import ArgumentParser
import Drivers
import Foundation
import Logging
import Reconciler
import Resources
import ServiceLifecycle
import Synchronization

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

        The node's own network file in the tree (nodes/<node>/network/interfaces,
        as `pvectl push` writes it from any node) is staged as interfaces.new
        beside --interfaces when it differs; `pvectl apply` installs it.

        On a pmxcfs mount, what other nodes write is followed through pmxcfs's
        IPC service (its change counter, asked every 0.2 s): inotify never sees
        it on FUSE. A node without quorum applies nothing (its guests stay as
        they are): passes say what they would do, status shows loop/KIND Held,
        and everything is looked at again when quorum comes back.

        Pull mode (--source REPO, as Flux or Argo CD): every --poll seconds the
        ref's head (--ref, default HEAD; a URL is mirrored under --state-dir) is
        validated and pushed into --root as `pvectl push` does; a commit that
        does not validate is logged with file:line and not pushed, the last good
        one stays. Files of --root changed by hand are logged as drift and, with
        --self-heal, written back. `pvectl status` shows the pull row.

        Examples:
          pvectl run
          pvectl run --only network --only firewall --resync 60
          pvectl run --report-only firewall
          pvectl run --source https://git.example/pve.git --ref main --poll 30 --self-heal
        """
    )

    @OptionGroup var options: ReconcileOptions

    @Option(name: .long, help: ArgumentHelp("Seconds between full passes that catch what no event reports.", valueName: "SECONDS"))
    var resync: Double = 300

    @Option(name: .customLong("report-only"),
            help: ArgumentHelp("Log this kind's drift and changes without applying them (repeatable): \(Kinds.names).",
                               valueName: "KIND"))
    var reportOnly: [String] = []

    @Flag(name: .long, help: "Also log every event and every pass that found nothing to do.")
    var verbose = false

    @Option(name: .long, help: ArgumentHelp("Pull mode: keep --root at this repository's ref (a path or URL).", valueName: "REPO"))
    var source: String?

    @Option(name: .long, help: ArgumentHelp("Pull mode: the ref to follow (default HEAD).", valueName: "REF"))
    var ref: String?

    @Option(name: .long, help: ArgumentHelp("Pull mode: seconds between polls of the source.", valueName: "SECONDS"))
    var poll: Double = 60

    @Flag(name: .customLong("self-heal"), help: "Pull mode: write back files of --root changed by hand.")
    var selfHeal = false

    func validate() throws {
        guard resync >= 1 else { throw ValidationError("--resync \(resync): at least 1 second") }
        for kind in reportOnly where !Kinds.catalog.contains(where: { $0.name == kind }) {
            throw ValidationError("--report-only \(kind): expected one of \(Kinds.names)")
        }
        if options.restart { throw ValidationError("--restart is for `pvectl apply`: the loop never restarts running VMs") }
        guard poll >= 1 else { throw ValidationError("--poll \(poll): at least 1 second") }
        if source == nil && (ref != nil || selfHeal) { throw ValidationError("--ref and --self-heal are for pull mode: add --source REPO") }
    }

    func run() async throws {
        let level: Logger.Level = verbose ? .debug : .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardOutput(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "pvectl")
        let controller = ReconcileLoop(options: options, resync: resync, reportOnly: Set(reportOnly), logger: logger)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: controller)]
        if let source {
            let pusher = Pusher(root: options.tree.root, interfaces: options.tree.interfaces, node: options.tree.nodeName,
                                mirrors: options.stateDir + "/sources", includePrivate: false, prune: false)
            let pull = PullMode(pusher: pusher, source: source, ref: ref, selfHeal: selfHeal, base: options.tree.source)
            services.append(.init(service: PullService(pull: pull, poll: poll, store: StateStore(directory: options.stateDir), logger: logger)))
        }
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// The loop as a service: watchers feed an inbox; the manager (`LoopManager`, in the Reconciler) queues keys and runs
/// one pass at a time.
struct ReconcileLoop: Service {
    /// QMP events after which a VM's state may differ from its config.
    /// (Not RESET, STOP or RESUME: a guest rebooting or paused is still running,
    /// and a guest without a boot disk resets every few seconds.)
    static let qemuEventsToFollow: Set<String> = ["SHUTDOWN", "GUEST_PANICKED", "DEVICE_DELETED"]

    let options: ReconcileOptions
    let resync: Double
    let reportOnly: Set<String>
    let logger: Logger

    func run() async throws {
        let manager = LoopManager(engine: try options.engine, selectors: try options.selectors, reportOnly: reportOnly, pid: getpid(),
                                  resync: resync)
        let root = URL(fileURLWithPath: options.tree.root).standardized.path
        let interfaces = URL(fileURLWithPath: options.tree.interfaces).standardized.path
        let inbox = ControllerInbox()
        // This node's network file as a push wrote it into the tree (from any node): staged beside the live one as
        // interfaces.new, as Proxmox stages network changes; `pvectl apply` installs it.
        let nodeInterfaces = root + "/nodes/\(options.tree.nodeName)/network/interfaces"
        let stageNodeInterfaces: @Sendable () -> Void = { [logger] in
            guard let content = FileManager.default.contents(atPath: nodeInterfaces) else { return }
            do {
                if let done = try PushTarget.stageInterfaces(content, live: interfaces) { logger.notice("\(done)") }
            } catch {
                logger.error("cannot stage \(nodeInterfaces): \(error)")
            }
        }
        stageNodeInterfaces()
        let onFileChange: @Sendable (String) -> Void = { [logger] path in
            if path == nodeInterfaces { stageNodeInterfaces() }
            let affected = manager.keys(forChangeOf: path, root: root, interfaces: interfaces)
            logger.debug("changed: \(path) → \(affected.map(\.description).sorted())")
            if !affected.isEmpty { Task { await inbox.post(keys: affected) } }
        }
        // A pmxcfs mount: other nodes' changes never reach inotify; pmxcfs's change counter is followed over its IPC
        // service, and its quorum (a node without quorum applies nothing: its guests stay as they are).
        let treeWatcher = ClusterTreeWatcher(root: root, service: options.tree.ipcService)
        treeWatcher?.start(onChange: onFileChange, onQuorum: { [logger] quorate in
            logger.notice(quorate ? "quorum regained: applying again" : "quorum lost: applying nothing, guests stay as they are")
            if quorate { Task { await inbox.post(keys: manager.kinds.map { ResourceKey($0) }) } }
        })
        if treeWatcher != nil { logger.info("following the cluster file system through pmxcfs's IPC service \(options.tree.ipcService)") }
        let onClusterFileSystem = FileManager.default.fileExists(atPath: root + "/.members")
        if treeWatcher == nil && onClusterFileSystem {
            logger.warning("\(root) is a pmxcfs mount but its IPC service \(options.tree.ipcService) does not answer: applying nothing")
        }
        // Three levels below the root reach nodes/<node>/qemu-server/; of the interfaces file, its directory alone.
        let rootWatcher = try FileChangeWatcher(directories: [root], depth: 3, onChange: onFileChange)
        let interfacesWatcher = try FileChangeWatcher(directories: [(interfaces as NSString).deletingLastPathComponent], depth: 0,
                                                      onChange: onFileChange)
        let kernelKinds = manager.kinds(following: .kernelNetwork)
        let netlinkWatcher = try NetworkChangeWatcher { [logger] in
            logger.debug("the kernel's network changed")
            Task { await inbox.post(kinds: kernelKinds) }
        }
        // QEMU's own events (qmeventd's socket): a guest powering off, a QEMU exiting. Each QEMU's VM is known from its
        // command line when it connects (it may be gone when it disconnects): its events concern that VM alone.
        var qemuEvents: QemuEventListener?
        let qemuKinds = manager.kinds(following: .qemuEvents)
        if !qemuKinds.isEmpty {
            let vmids = Mutex<[pid_t: Int]>([:])
            do {
                qemuEvents = try QemuEventListener { [logger] event in
                    let pid: pid_t
                    switch event {
                    case .qmp(let name, let from) where Self.qemuEventsToFollow.contains(name):
                        logger.info("QEMU event \(name) from pid \(from)")
                        pid = from
                    case .connected(let from):
                        let vmid = QemuProcessDriver.vmid(ofQemu: from)
                        vmids.withLock { $0[from] = vmid }
                        logger.info("following the events of QEMU pid \(from)\(vmid.map { " (VM \($0))" } ?? "")")
                        return
                    case .disconnected(let from):
                        logger.info("QEMU pid \(from) closed its event connection")
                        pid = from
                    case .qmp:
                        return
                    }
                    let vmid = vmids.withLock { event == .disconnected(pid: pid) ? $0.removeValue(forKey: pid) : $0[pid] }
                    let keys = qemuKinds.map { ResourceKey($0, vmid.map(String.init)) }
                    Task { await inbox.post(keys: keys) }
                }
            } catch {
                logger.warning("not following QEMU events: \(error); a guest's own poweroff is seen at the next resync")
            }
        }
        // LXC's monitor: a container that stopped or lost its init concerns that container alone.
        var containerEvents: LxcEventListener?
        let containerKinds = manager.kinds(following: .containerEvents)
        if !containerKinds.isEmpty {
            do {
                containerEvents = try LxcEventListener { [logger] event in
                    guard ["STOPPED", "ABORTING", "EXITED", "RUNNING", "FROZEN", "THAWED"].contains(event.state) else { return }
                    logger.info("container \(event.vmid): \(event.state)")
                    let keys = containerKinds.map { ResourceKey($0, String(event.vmid)) }
                    Task { await inbox.post(keys: keys) }
                } onExit: { [logger] why in
                    logger.warning("\(why): a container that stops is seen at the next resync")
                }
                logger.info("following container events (lxc-monitor)")
            } catch {
                logger.warning("not following container events: \(error); a container that stops is seen at the next resync")
            }
        }
        defer {
            containerEvents?.stop()
            rootWatcher.stop()
            treeWatcher?.stop()
            interfacesWatcher.stop()
            netlinkWatcher.stop()
            qemuEvents?.stop()
        }
        logger.info("watching", metadata: ["root": "\(root)", "interfaces": "\(interfaces)", "kinds": "\(manager.kinds)",
                                           "resync": "\(Int(resync)) s"])

        let store = StateStore(directory: options.stateDir)
        try store.save(manager.record, as: "loop")
        let options = self.options
        let publisher = treeWatcher.map { _ in LoopPublisher(service: options.tree.ipcService) }
        // The loop never installs a staged interfaces.new: Proxmox applies one only when asked.
        let load: @Sendable () throws -> DesiredState = { try options.load(stagedInterfaces: false) }
        await withGracefulShutdownHandler {
            var manager = manager
            manager.postAll()
            while await !inbox.isStopping {
                manager.post(await inbox.take())
                if let key = manager.next() {
                    // On a pmxcfs mount whose IPC service does not answer, quorum is unknown: nothing is applied either.
                    let unknown = onClusterFileSystem ? "quorum unknown (pmxcfs's IPC service does not answer)" : nil
                    let hold = treeWatcher.map { $0.isQuorate ? nil : "no quorum" } ?? unknown
                    await manager.pass(key, load: load, logger: logger, hold: hold)
                    do { try store.save(manager.record, as: "loop") } catch { logger.error("cannot record the loop's state: \(error)") }
                    if let publisher {
                        // The other nodes read it through `pvectl status --cluster`.
                        let pushed = (try? PushTarget(root: root).record())?.flatMap { $0.revision.commit ?? $0.revision.digest }
                        do {
                            try publisher.publish(LoopPublisher.Report(node: options.tree.nodeName, loop: manager.record, pushed: pushed,
                                                                       publishedAt: Date()))
                        } catch { logger.debug("cannot publish the loop's state: \(error)") }
                    }
                    continue
                }
                await inbox.wait(until: .now + .milliseconds(max(0, Int(manager.nextWake.timeIntervalSince(manager.clock.now()) * 1000))))
            }
            manager.record.stoppedAt = manager.clock.now()
            try? store.save(manager.record, as: "loop")
            logger.info("stopped")
        } onGracefulShutdown: {
            Task { await inbox.stop() }
        }
    }
}

/// Pull mode as a service: a poll of the source every `poll` seconds, its record saved for `pvectl status`.
struct PullService: Service {
    let pull: PullMode
    let poll: Double
    let store: StateStore
    let logger: Logger

    func run() async throws {
        var record = try? store.load("pull", as: PullRecord.self)
        if record?.source != pull.source || record?.ref != pull.ref { record = nil }
        logger.info("pull mode", metadata: ["source": "\(pull.source)", "ref": "\(pull.ref ?? "HEAD")", "poll": "\(Int(poll)) s",
                                            "self-heal": "\(pull.selfHeal)"])
        while !Task.isShuttingDownGracefully {
            let next = await pull.poll(previous: record) { [logger] line in logger.info("pull: \(line)") }
            record = next
            do { try store.save(next, as: "pull") } catch { logger.error("cannot record pull mode's state: \(error)") }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(poll)) }
        }
    }
}
