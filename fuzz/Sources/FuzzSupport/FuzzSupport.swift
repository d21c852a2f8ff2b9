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
        _ = format.validate(text, file: file)
        _ = format.canonicalize(text, file: file)
        _ = format.canonicalize(text, file: file, dropInvalid: true)
        precondition(format.losslessRoundTrip(text, file: file) == text, "lossless round trip changed the input")
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
nonisolated(unsafe) private var fuzzedFunction: (UnsafePointer<UInt8>, Int) -> Void = { _, _ in }

extension FuzzSupport {
    /// Volume IDs, volume names (every storage type's rules), backup archive
    /// names and disk naming: never trap; a parsed volume ID reassembles to its input.
    public static func runVolumeID(_ data: UnsafePointer<UInt8>, _ size: Int) {
        let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
        if let (storage, volname) = StorageVolumes.parseVolumeID(text) {
            precondition(storage + ":" + volname == text, "volume ID did not reassemble")
        }
        for type in ["dir", "lvm", "lvmthin", "zfspool", "rbd", "btrfs"] {
            if let volume = try? StorageVolumes.parseVolname(text, storageType: type), type == "dir" {
                _ = try? StorageVolumes.filesystemPath(path: "/var/lib/vz", volname: text)
                _ = StorageVolumes.nextDiskName(existing: [volume.name], vmid: Int(volume.vmid ?? "") ?? 100, format: volume.format,
                                                addFormatSuffix: true, allowsSubvol: false)
            }
        }
        _ = try? StorageVolumes.archiveInfo(text, timeZone: TimeZone(identifier: "UTC")!)
        _ = StorageVolumes.parseContentDirectories(text)
    }

    /// Runs libFuzzer on a function of the input bytes.
    public static func main(_ function: @escaping (UnsafePointer<UInt8>, Int) -> Void) -> Never {
        fuzzedFunction = function
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        let status = LLVMFuzzerRunDriver(&argc, &argv) { data, size in
            let empty: [UInt8] = [0]
            if let data {
                fuzzedFunction(data, size)
            } else {
                empty.withUnsafeBufferPointer { fuzzedFunction($0.baseAddress!, 0) }
            }
            return 0
        }
        exit(status)
    }
}

extension FuzzSupport {
    /// Runs libFuzzer on one format with this process's arguments.
    public static func main(_ format: ConfigFormat) -> Never {
        fuzzedFormat = format
        main { data, size in FuzzSupport.run(fuzzedFormat, data, size) }
    }
}
