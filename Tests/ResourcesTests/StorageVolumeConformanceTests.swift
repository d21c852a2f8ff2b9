import Drivers
import Foundation
import Resources
import Testing
import TestSupport

/// pve-storage's own vectors (`conformance/pve-storage/_derived/`): every case
/// must give upstream's result or upstream's error text.
@Suite("pve-storage volume vectors", .needsConformance)
struct StorageVolumeConformanceTests {
    static let directory = "pve-storage/_derived/"

    static func json(_ name: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Corpus.data(directory + name)) as? [String: Any])
    }

    /// Perl does not tell "1234" from 1234, and undef is JSON null.
    static func text(_ value: Any?) -> String? {
        switch value {
        case nil, is NSNull: return nil
        case let number as NSNumber: return number.stringValue
        case let string as String: return string
        default: return "\(value!)"
        }
    }

    @Test("parse_volname: every case gives upstream's tuple or error")
    func parseVolname() throws {
        let tests = try #require(Self.json("parse_volname.json")["tests"] as? [[String: Any]])
        var passed = 0
        for test in tests {
            let volname = try #require(test["volname"] as? String)
            let got: [String?]
            do {
                let volume = try StorageVolumes.parseVolname(volname)
                got = [volume.vtype, volume.name, volume.vmid, volume.baseName, volume.baseVMID, volume.isBase, volume.format]
            } catch {
                got = [error.message]
            }
            let expected: [String?] = (test["expected"] as? [Any]).map { $0.map(Self.text) } ?? [test["expected"] as? String]
            if got == expected { passed += 1 } else { Issue.record("\(volname): got \(got), expected \(expected)") }
        }
        Corpus.report("pve-storage parse_volname", passed: passed, total: tests.count)
        #expect(passed == tests.count)
    }

    @Test("get_subdir: content directories and their overrides")
    func subdirectories() throws {
        let tests = try #require(Self.json("get_subdir.json")["tests"] as? [[Any]])
        var passed = 0
        for test in tests {
            let scfg = try #require(test[0] as? [String: Any])
            let vtype = try #require(test[1] as? String)
            let expected = try #require(test[2] as? String)
            let got: String
            do {
                got = try StorageVolumes.subdirectory(path: scfg["path"] as? String,
                                                      contentDirectories: scfg["content-dirs"] as? [String: String] ?? [:], vtype: vtype)
            } catch {
                got = error.message
            }
            if got == expected { passed += 1 } else { Issue.record("\(vtype) \(scfg): got \(got), expected \(expected)") }
        }
        Corpus.report("pve-storage get_subdir", passed: passed, total: tests.count)
        #expect(passed == tests.count)
    }

    @Test("filesystem_path: path, owner and vtype, and the snapshot rule")
    func filesystemPaths() throws {
        let file = try Self.json("filesystem_path.json")
        let path = try #require((file["scfg"] as? [String: Any])?["path"] as? String)
        let tests = try #require(file["tests"] as? [[String: Any]])
        var passed = 0
        for test in tests {
            let volname = try #require(test["volname"] as? String)
            let got: [String?]
            do {
                let result = try StorageVolumes.filesystemPath(path: path, volname: volname, snapshot: test["snapname"] as? String)
                got = [result.path, result.vmid, result.vtype]
            } catch {
                got = [error.message]
            }
            let expected: [String?] = (test["expected"] as? [Any]).map { $0.map(Self.text) } ?? [test["expected"] as? String]
            if got == expected { passed += 1 } else { Issue.record("\(volname): got \(got), expected \(expected)") }
        }
        Corpus.report("pve-storage filesystem_path", passed: passed, total: tests.count)
        #expect(passed == tests.count)
    }

    @Test("path_to_volume_id: real files in a temporary storage directory")
    func pathToVolumeID() throws {
        let file = try Self.json("path_to_volume_id.json")
        let placeholder = try #require(file["storage_dir_placeholder"] as? String)
        let tests = try #require(file["tests"] as? [[String: Any]])
        var passed = 0
        for test in tests {
            // A fresh directory per case, as upstream's runner empties it between cases.
            let directory = try TemporaryDirectory()
            let storage = StorageVolumes.FileStorage(id: "local", type: "dir", path: directory.path)
            let path = try #require(test["volname"] as? String).replacingOccurrences(of: placeholder, with: directory.path)
            let url = URL(fileURLWithPath: path)
            if path.hasSuffix("/") {
                try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            } else {
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                #expect(FileManager.default.createFile(atPath: path, contents: Data()))
            }
            let got: [String]
            do {
                got = try StorageVolumes.pathToVolumeID(path, storages: [storage], files: HostVolumeFiles()).map { [$0.vtype, $0.volumeID] } ?? [""]
            } catch {
                got = [error.message]
            }
            let expected = try #require(test["expected"] as? [String])
            if got == expected { passed += 1 } else { Issue.record("\(test["description"] ?? path): got \(got), expected \(expected)") }
        }
        Corpus.report("pve-storage path_to_volume_id", passed: passed, total: tests.count)
        #expect(passed == tests.count)
    }

    @Test("archive_info: backup archive names (TZ=UTC)")
    func archiveInfo() throws {
        let tests = try #require(Self.json("archive_info.json")["tests"] as? [[String: Any]])
        var passed = 0
        for test in tests {
            let archive = try #require(test["archive"] as? String)
            var same = false
            do {
                let info = try StorageVolumes.archiveInfo(archive, timeZone: TimeZone(identifier: "UTC")!)
                if let expected = test["expected"] as? [String: Any] {
                    same = info.type == expected["type"] as? String && info.format == expected["format"] as? String
                        && info.compression == expected["compression"] as? String
                        && info.decompressor == expected["decompressor"] as? [String]
                        && info.filename == expected["filename"] as? String
                        && info.vmid == (expected["vmid"] as? NSNumber)?.intValue
                        && info.ctime == (expected["ctime"] as? NSNumber)?.intValue
                        && info.isStandardName == ((expected["is_std_name"] as? NSNumber)?.intValue == 1)
                        && info.logFilename == expected["logfilename"] as? String
                        && info.notesFilename == expected["notesfilename"] as? String
                }
                if !same { Issue.record("\(archive): got \(info), expected \(test["expected"] ?? "")") }
            } catch {
                same = error.message == test["expected"] as? String
                if !same { Issue.record("\(archive): got \(error.message), expected \(test["expected"] ?? "")") }
            }
            if same { passed += 1 }
        }
        Corpus.report("pve-storage archive_info", passed: passed, total: tests.count)
        #expect(passed == tests.count)
    }

    @Test("prune_backups: keep-* marking over upstream's mocked backup lists")
    func prune() throws {
        let file = try Self.json("prune_backups.json")
        let lists = try #require(file["mocked_backups_lists"] as? [String: [[String: Any]]])
        let tests = try #require(file["tests"] as? [[String: Any]])
        var passed = 0
        for test in tests {
            let list = try #require(lists[test["list"] as? String ?? "default"])
            let backups = list.map { item in
                StorageVolumes.PruneEntry(volumeID: item["volid"] as! String, ctime: (item["ctime"] as! NSNumber).intValue,
                                          vmid: (item["vmid"] as? NSNumber)?.intValue,
                                          protected: (item["protected"] as? NSNumber)?.intValue == 1)
            }
            let keep = (test["keep"] as? [String: Any] ?? [:]).compactMapValues { ($0 as? NSNumber)?.intValue }
            let marked = StorageVolumes.markBackups(backups, keep: keep, vmid: (test["vmid"] as? NSNumber)?.intValue,
                                                    type: test["type"] as? String, timeZone: TimeZone(identifier: "UTC")!)
                .sorted { $0.volumeID < $1.volumeID }
            let got = marked.map { "\($0.volumeID) \($0.ctime) \($0.vmid.map(String.init) ?? "-") \($0.type) \($0.mark ?? "-")" }
            let expected = try #require(test["expected"] as? [[String: Any]]).sorted { ($0["volid"] as! String) < ($1["volid"] as! String) }.map {
                "\($0["volid"]!) \($0["ctime"]!) \(($0["vmid"] as? NSNumber)?.stringValue ?? "-") \($0["type"]!) \($0["mark"]!)"
            }
            if got == expected { passed += 1 } else { Issue.record("\(test["description"] ?? ""): got \(got), expected \(expected)") }
        }
        Corpus.report("pve-storage prune_backups", passed: passed, total: tests.count)
        #expect(passed == tests.count)
    }
}
