import ArgumentParser
import Foundation
import Resources

extension ConfigFormat: ExpressibleByArgument {}

struct Format: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fmt",
        abstract: "Print files the way Proxmox VE writes them.",
        discussion: """
        The format is detected from the path (storage.cfg, qemu-server/<vmid>.conf,
        lxc/<vmid>.conf, interfaces, *.fw, corosync.conf, datacenter.cfg, user.cfg)
        unless --format is given. A file with parse errors is not rewritten: its
        errors are printed and the command exits 1. Warnings are printed too.

        Examples:
          pvectl fmt /etc/pve/storage.cfg
          pvectl fmt --check /etc/pve/qemu-server/*.conf
          pvectl fmt --format interfaces --write /etc/network/interfaces.new
          pvectl fmt --drop-invalid --write /etc/pve/qemu-server/100.conf
        """
    )

    @Option(name: .long, help: ArgumentHelp("File format: \(ConfigFormat.allCases.map(\.rawValue).joined(separator: ", ")).", valueName: "KIND"))
    var format: ConfigFormat?

    @Flag(name: .long, help: "Print nothing; exit 1 when a file is not canonical.")
    var check = false

    @Flag(name: [.short, .long], help: "Rewrite files in place (atomically) instead of printing.")
    var write = false

    @Flag(name: .long, help: """
        Read guest configs as Proxmox does when it rewrites one (its non-strict parse): values that fail their type \
        check and unknown sections are dropped, of a repeated section the last one is kept; each is said as a warning.
        """)
    var dropInvalid = false

    @Argument(help: ArgumentHelp("Files to format.", valueName: "FILE"))
    var files: [String]

    func validate() throws {
        if check && write { throw ValidationError("--check and --write exclude each other") }
    }

    func run() throws {
        var failed = false
        for file in files {
            guard let kind = format ?? ConfigFormat.detect(path: file) else {
                throw ValidationError("cannot tell the format of \(file); pass --format")
            }
            guard let data = FileManager.default.contents(atPath: file) else {
                FileHandle.standardError.write(Data("\(file):1:1: error: cannot read file\n".utf8))
                failed = true
                continue
            }
            guard let text = String(data: data, encoding: .utf8) else {
                FileHandle.standardError.write(Data("\(file):1:1: error: file is not valid UTF-8\n".utf8))
                failed = true
                continue
            }
            let result = kind.canonicalize(text, file: file, dropInvalid: dropInvalid)
            let errors = result.diagnostics.filter { $0.severity == .error }
            guard errors.isEmpty, let canonical = result.canonical else {
                FileHandle.standardError.write(Data((result.diagnostics.map(\.description).joined(separator: "\n") + "\n").utf8))
                failed = true
                continue
            }
            // Warnings are shown whatever the output: what --drop-invalid drops is said.
            let warnings = result.diagnostics.filter { $0.severity == .warning }
            if !warnings.isEmpty { FileHandle.standardError.write(Data((warnings.map(\.description).joined(separator: "\n") + "\n").utf8)) }
            if check {
                if canonical != text {
                    FileHandle.standardError.write(Data("\(file): not canonical\n".utf8))
                    failed = true
                }
            } else if write {
                if canonical != text {
                    try Data(canonical.utf8).write(to: URL(fileURLWithPath: file), options: .atomic)
                }
            } else {
                FileHandle.standardOutput.write(Data(canonical.utf8))
            }
        }
        if failed { throw ExitCode(1) }
    }
}
