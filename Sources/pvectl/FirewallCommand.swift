import ArgumentParser
import Drivers
import Foundation
import Reconciler
import Resources

/// `pvectl firewall compile`: the ruleset the firewall files describe, as the
/// nft script apply would load (the counterpart of `pve-firewall compile`).
struct FirewallCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "firewall",
        abstract: "Firewall tools.",
        subcommands: [Compile.self]
    )

    struct Compile: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the nftables script compiled from cluster.fw, host.fw and <vmid>.fw.",
            discussion: """
            Nothing is loaded or changed. Rules that fail validation are reported on
            stderr with their file:line and left out. local_network comes from
            [ALIASES], else the node's corosync address or resolved name with the
            prefix of the interfaces file, else its first static address.

            Examples:
              pvectl firewall compile
              pvectl firewall compile --root ./pve --node pve1 | nft -c -f -
            """
        )

        @OptionGroup var tree: TreeOptions

        func run() async throws {
            let state = DesiredState.load(root: tree.root, interfaces: tree.interfaces, node: tree.nodeName, source: tree.source)
            let compiled = FirewallCompiler.compile(FirewallCompiler.Input(
                state: state, resolvedNodeAddress: FirewallCompiler.needsNodeAddress(state) ? NftablesFirewallDriver.resolve(tree.nodeName) : nil))
            for problem in state.diagnostics where problem.severity == .error && problem.location.file.hasSuffix(".fw") {
                printError(problem.description)
            }
            for skipped in compiled.skipped { printError(skipped.description) }
            if compiled.enabled {
                printError("local_network: \(compiled.localNetwork ?? "(none)") from \(compiled.localNetworkOrigin)")
            } else {
                printError("the firewall is not enabled in cluster.fw: the script only removes pvectl's tables")
            }
            printOut(compiled.script())
        }
    }
}
