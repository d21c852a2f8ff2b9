import Foundation
import Resources

/// What every parser must do with any input: never trap, never hang, write an
/// unedited file back byte-identical, and produce a canonical form (or
/// diagnostics) without crashing. A broken invariant traps on purpose so
/// libFuzzer records the input.
public enum FuzzSupport {
    public static func run(_ format: ConfigFormat, _ data: UnsafePointer<UInt8>, _ size: Int) {
        let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
        let file = format == .lxc ? "lxc/100.conf" : format == .qemu ? "qemu-server/100.conf" : "fuzz"
        let lossless: String
        switch format {
        case .storage:
            let (parsed, _) = SectionConfigFile.parse(text, file: file) { Specs.storage.sectionLayout(forType: $0) }
            _ = StorageValidator.validate(parsed)
            lossless = parsed.losslessText()
        case .sectionconfig:
            lossless = SectionConfigFile.parse(text, file: file).0.losslessText()
        case .qemu, .lxc:
            let kind: GuestConfig.Kind = format == .qemu ? .qemu : .lxc
            let (parsed, _) = GuestConfig.parse(text, file: file, kind: kind)
            _ = GuestValidator.validate(parsed, spec: Specs.guest(kind))
            _ = parsed.canonicalText(spec: Specs.guest(kind))
            lossless = parsed.losslessText()
        case .interfaces:
            let (parsed, _) = InterfacesFile.parse(text, file: file)
            _ = InterfacesValidator.validate(parsed)
            lossless = parsed.losslessText()
        case .firewall:
            let (parsed, _) = FirewallConfig.parse(text, file: file)
            _ = FirewallValidator.validate(parsed)
            lossless = parsed.losslessText()
        case .corosync:
            let (parsed, _) = CorosyncConfig.parse(text, file: file)
            _ = CorosyncValidator.validate(parsed)
            lossless = parsed.losslessText()
        case .datacenter:
            let (parsed, _) = DatacenterConfig.parse(text, file: file)
            _ = DatacenterValidator.validate(parsed)
            lossless = parsed.losslessText()
        case .user:
            let (parsed, _) = UserConfig.parse(text, file: file)
            _ = UserConfigValidator.validate(parsed)
            lossless = parsed.losslessText()
        }
        _ = format.canonicalize(text, file: file)
        precondition(lossless == text, "lossless round trip changed the input")
    }
}

/// libFuzzer's entry for programs that keep their own main.
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

// Set once before the driver starts; the C callback cannot capture it.
nonisolated(unsafe) private var fuzzedFormat: ConfigFormat = .storage

extension FuzzSupport {
    /// Runs libFuzzer on one format with this process's arguments.
    public static func main(_ format: ConfigFormat) -> Never {
        fuzzedFormat = format
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        let status = LLVMFuzzerRunDriver(&argc, &argv) { data, size in
            let empty: [UInt8] = [0]
            if let data {
                FuzzSupport.run(fuzzedFormat, data, size)
            } else {
                empty.withUnsafeBufferPointer { FuzzSupport.run(fuzzedFormat, $0.baseAddress!, 0) }
            }
            return 0
        }
        exit(status)
    }
}
