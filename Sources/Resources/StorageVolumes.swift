import Foundation

/// Volume identifiers as Proxmox VE's storage layer reads them: `storage:volname`,
/// the volume name rules per storage type, the content sub-directories, backup
/// archive names and backup retention. The error texts are upstream's, because
/// tools and people match on them.
public enum StorageVolumes {
    /// A failed parse, with upstream's message (trailing newline included).
    public struct Failure: Error, Equatable, CustomStringConvertible {
        public var message: String
        public init(_ message: String) { self.message = message }
        public var description: String { message.hasSuffix("\n") ? String(message.dropLast()) : message }
    }

    /// What a volume name says: `(vtype, name, vmid, basename, basevmid, isBase, format)`.
    public struct Volume: Hashable, Sendable {
        public var vtype: String
        public var name: String
        public var vmid: String?
        public var baseName: String?
        public var baseVMID: String?
        /// "base-" (directory storages) or "base" (LVM-thin) when the volume is a template base.
        public var isBase: String?
        public var format: String?

        public init(vtype: String, name: String, vmid: String? = nil, baseName: String? = nil, baseVMID: String? = nil,
                    isBase: String? = nil, format: String? = nil) {
            self.vtype = vtype
            self.name = name
            self.vmid = vmid
            self.baseName = baseName
            self.baseVMID = baseVMID
            self.isBase = isBase
            self.format = format
        }
    }

    // MARK: patterns
    // ICU regular expressions (NSRegularExpression), compiled once; they are
    // immutable and safe to share. (Swift's Regex leaks its parse tree, which
    // LeakSanitizer reports in the fuzzer, and is slower here.)

    struct Pattern: @unchecked Sendable {
        let expression: NSRegularExpression
        let anchored: NSRegularExpression

        init(_ pattern: String, ignoringCase: Bool) {
            let options: NSRegularExpression.Options = ignoringCase ? [.caseInsensitive] : []
            // The patterns are constants of this file: a failure is a programming error.
            expression = try! NSRegularExpression(pattern: pattern, options: options)
            anchored = try! NSRegularExpression(pattern: "\\A(?:" + pattern + ")\\z", options: options)
        }

        func groups(_ text: String, whole: Bool) -> [String?]? {
            let string = text as NSString
            let range = NSRange(location: 0, length: string.length)
            guard let result = (whole ? anchored : expression).firstMatch(in: text, options: [], range: range) else { return nil }
            return (0..<result.numberOfRanges).map { index in
                let part = result.range(at: index)
                return part.location == NSNotFound ? nil : string.substring(with: part)
            }
        }
    }

    private static func regex(_ pattern: String, ignoringCase: Bool = false) -> Pattern {
        Pattern(pattern, ignoringCase: ignoringCase)
    }

    /// The capture groups (0 is the whole match) when the whole text matches.
    private static func match(_ text: String, _ pattern: Pattern) -> [String?]? {
        pattern.groups(text, whole: true)
    }

    /// The capture groups of the first match anywhere in the text.
    private static func search(_ text: String, _ pattern: Pattern) -> [String?]? {
        pattern.groups(text, whole: false)
    }

    static let volumeIDPattern = regex(#"([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)"#, ignoringCase: true)
    static let nameDirPattern = regex(#"((base-)?[^/\s]+\.(raw|qcow2|vmdk|subvol))"#)
    static let linkedPattern = regex(#"(\d+)/(\S+)/(\d+)/(\S+)"#)
    static let imagePattern = regex(#"(\d+)/(\S+)"#)
    static let isoPattern = regex(#"iso/([^/]+\.(?i:iso|img))"#)
    static let templatePattern = regex(#"vztmpl/([^/]+\.(?i:tar(?:\.(?:gz|xz|zst|bz2))?))"#)
    static let rootdirPattern = regex(#"rootdir/(\d+)"#)
    static let backupExtension = #"\.(tgz|(?:tar|vma)(?:\.(gz|lzo|zst|bz2))?)"#
    static let backupPattern = regex(#"backup/([^/]+"# + backupExtension + ")")
    static let backupOwnerPattern = regex(#"vzdump-(openvz|lxc|qemu)-(\d+)-.+"#)
    static let snippetsPattern = regex(#"snippets/([^/]+)"#)
    static let safeWithSpace = #"[ a-zA-Z0-9\-.+=_]"#
    static let safe = #"[a-zA-Z0-9\-.+=_]"#
    static let ovaContentPattern = regex("import/(" + safeWithSpace + #"+\.ova/"# + safeWithSpace + #"+\.(qcow2|raw|vmdk))"#)
    static let importPattern = regex("import/(" + safeWithSpace + #"+\.(ova|ovf|qcow2|raw|vmdk))"#)

    static let lvmNamePattern = regex(#"[a-z0-9][a-z0-9\-_.]*[a-z0-9]"#, ignoringCase: true)
    static let lvmVolumePattern = regex(#"(vm-(\d+)-\S+)"#)
    static let lvmThinVolumePattern = regex(#"((vm|base)-(\d+)-\S+)"#)
    static let zfsVolumePattern = regex(#"(((base|basevol)-(\d+)-\S+)/)?((base|basevol|vm|subvol)-(\d+)-\S+)"#)
    static let rbdVolumePattern = regex(#"((base-(\d+)-\S+)/)?((base)?(vm)?-(\d+)-\S+)"#)
    static let imageFilePattern = regex(#"(\d+)/([^/\s]+)"#)
    static let backingFilePattern = regex(#"\.\./(\d+)/([^/]+)"#)
    static let isoFilePattern = regex(#"[^/]+\.(?i:iso|img)"#)
    static let templateFilePattern = regex(#"[^/]+\.(?i:tar(?:\.(?:gz|xz|zst|bz2))?)"#)
    static let digitsPattern = regex(#"\d+"#)
    static let backupFilePattern = regex("[^/]+" + backupExtension)
    static let plainFilePattern = regex("[^/]+")
    static let importFilePattern = regex(safe + #"+\.(ova|ovf|qcow2|raw|vmdk)"#)
    static let archivePattern = regex("(vzdump-(lxc|openvz|qemu)-.+" + backupExtension + ")")

    // MARK: volume IDs

    /// `local:100/vm-100-disk-0.qcow2` → ("local", "100/vm-100-disk-0.qcow2").
    public static func parseVolumeID(_ volumeID: String) -> (storage: String, volname: String)? {
        // Printable ASCII, the usual case, is split by hand (the pattern's storage ID cannot hold ':', so the first ':'
        // splits); anything else goes through upstream's pattern, whose case folding and line terminators then apply.
        let bytes = volumeID.utf8
        guard bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) else {
            guard let groups = match(volumeID, volumeIDPattern), let storage = groups[1], let volname = groups[2] else { return nil }
            return (storage, volname)
        }
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else { return nil }
        let storage = bytes[..<colon]
        let afterColon = bytes.index(after: colon)
        func isAlphanumeric(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
        }
        guard storage.count >= 2, afterColon < bytes.endIndex,
              let first = storage.first, (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(first | 0x20),
              let last = storage.last, isAlphanumeric(last),
              storage.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") })
        else { return nil }
        return (String(volumeID[..<colon]), String(volumeID[afterColon...]))
    }

    /// A disk file name: `(name, format, isBase)`.
    public static func parseNameDir(_ name: String) throws(Failure) -> (name: String, format: String, isBase: String?) {
        guard let groups = match(name, nameDirPattern), let whole = groups[1], let format = groups[3] else {
            throw Failure("unable to parse volume filename '\(name)'\n")
        }
        return (whole, format, groups[2])
    }

    /// The volume name rules of a storage type (`dir` and the other
    /// file-based types share upstream's base plugin rules).
    public static func parseVolname(_ volname: String, storageType: String = "dir") throws(Failure) -> Volume {
        switch storageType {
        case "lvm", "lvmthin":
            guard match(volname, lvmNamePattern) != nil else {
                throw Failure("lvm name '\(volname)' contains illegal characters\n")
            }
            guard storageType == "lvmthin" else {
                guard let groups = match(volname, lvmVolumePattern) else { throw Failure("unable to parse lvm volume name '\(volname)'\n") }
                return Volume(vtype: "images", name: groups[1]!, vmid: groups[2], format: "raw")
            }
            guard let groups = match(volname, lvmThinVolumePattern) else { throw Failure("unable to parse lvm volume name '\(volname)'\n") }
            return Volume(vtype: "images", name: groups[1]!, vmid: groups[3], isBase: groups[2] == "base" ? "base" : nil, format: "raw")
        case "zfspool":
            guard let groups = match(volname, zfsVolumePattern) else {
                throw Failure("unable to parse zfs volume name '\(volname)'\n")
            }
            let kind = groups[6]!
            let format = kind == "vm" || kind == "base" ? "raw" : "subvol"
            let isBase = kind == "base" || kind == "basevol" ? kind : nil
            return Volume(vtype: "images", name: groups[5]!, vmid: groups[7], baseName: groups[2], baseVMID: groups[4],
                          isBase: isBase, format: format)
        case "rbd":
            guard let groups = match(volname, rbdVolumePattern) else {
                throw Failure("unable to parse rbd volume name '\(volname)'\n")
            }
            return Volume(vtype: "images", name: groups[4]!, vmid: groups[7], baseName: groups[2], baseVMID: groups[3],
                          isBase: groups[5], format: "raw")
        default:
            return try parseDirectoryVolname(volname)
        }
    }

    static func parseDirectoryVolname(_ volname: String) throws(Failure) -> Volume {
        if let groups = match(volname, linkedPattern) {
            _ = try parseNameDir(groups[2]!)
            let parsed = try parseNameDir(groups[4]!)
            return Volume(vtype: "images", name: groups[4]!, vmid: groups[3], baseName: groups[2], baseVMID: groups[1],
                          isBase: parsed.isBase, format: parsed.format)
        }
        if let groups = match(volname, imagePattern) {
            let parsed = try parseNameDir(groups[2]!)
            return Volume(vtype: "images", name: groups[2]!, vmid: groups[1], isBase: parsed.isBase, format: parsed.format)
        }
        if let groups = match(volname, isoPattern) { return Volume(vtype: "iso", name: groups[1]!, format: "raw") }
        if let groups = match(volname, templatePattern) { return Volume(vtype: "vztmpl", name: groups[1]!, format: "raw") }
        if let groups = match(volname, rootdirPattern) { return Volume(vtype: "rootdir", name: groups[1]!, vmid: groups[1]) }
        if let groups = match(volname, backupPattern) {
            let file = groups[1]!
            let owner = match(file, backupOwnerPattern)?[2] ?? nil
            return Volume(vtype: "backup", name: file, vmid: owner, format: "raw")
        }
        if let groups = match(volname, snippetsPattern) { return Volume(vtype: "snippets", name: groups[1]!, format: "raw") }
        if let groups = match(volname, ovaContentPattern) { return Volume(vtype: "import", name: groups[1]!, format: "ova+" + groups[2]!) }
        if let groups = match(volname, importPattern) { return Volume(vtype: "import", name: groups[1]!, format: groups[2]!) }
        throw Failure("unable to parse directory volume name '\(volname)'\n")
    }

    // MARK: directories

    /// The content a storage type holds when `content` is not set (upstream's plugin defaults).
    public static func defaultContent(storageType: String) -> Set<String> {
        switch storageType {
        case "dir", "btrfs", "lvmthin", "zfspool": ["images", "rootdir"]
        case "cephfs", "pbs": ["backup"]
        case "esxi": ["import"]
        default: ["images"]
        }
    }

    /// A list value as PVE::Tools::split_list reads it: commas, semicolons and blanks separate.
    public static func splitList(_ value: String) -> [String] {
        value.split(whereSeparator: { $0 == "," || $0 == ";" || $0 == " " || $0 == "\t" }).map(String.init)
    }

    /// Content type → sub-directory of a file-based storage.
    public static let contentSubdirectories: [String: String] = [
        "images": "images", "rootdir": "private", "iso": "template/iso", "vztmpl": "template/cache",
        "backup": "dump", "snippets": "snippets", "import": "import",
    ]

    /// `content-dirs` (`iso=isos,backup=dumps`) as a map; unknown content types are left out.
    public static func parseContentDirectories(_ value: String?) -> [String: String] {
        var result: [String: String] = [:]
        for item in splitList(value ?? "") {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, contentSubdirectories[parts[0]] != nil else { continue }
            result[parts[0]] = parts[1]
        }
        return result
    }

    /// The directory of a content type on a storage with `path`.
    public static func subdirectory(path: String?, contentDirectories: [String: String] = [:], vtype: String) throws(Failure) -> String {
        guard let path, !path.isEmpty else { throw Failure("storage definition has no path\n") }
        guard let standard = contentSubdirectories[vtype] else { throw Failure("unknown vtype '\(vtype)'\n") }
        return path + "/" + (contentDirectories[vtype] ?? standard)
    }

    /// Where a volume lives on a file-based storage: `(path, vmid, vtype)`.
    public static func filesystemPath(path: String?, contentDirectories: [String: String] = [:], volname: String,
                                      snapshot: String? = nil) throws(Failure) -> (path: String, vmid: String?, vtype: String) {
        let volume = try parseDirectoryVolname(volname)
        if snapshot != nil && volume.format != "qcow2" && volume.format != "qed" {
            throw Failure("can't snapshot this image format\n")
        }
        var directory = try subdirectory(path: path, contentDirectories: contentDirectories, vtype: volume.vtype)
        if volume.vtype == "images" { directory += "/" + (volume.vmid ?? "") }
        return (directory + "/" + volume.name, volume.vmid, volume.vtype)
    }

    /// One file-based storage as `pathToVolumeID` needs it.
    public struct FileStorage: Sendable {
        public var id: String
        public var type: String
        public var path: String
        public var contentDirectories: [String: String]

        public init(id: String, type: String, path: String, contentDirectories: [String: String] = [:]) {
            self.id = id
            self.type = type
            self.path = path
            self.contentDirectories = contentDirectories
        }
    }

    /// What `pathToVolumeID` needs to know about files; a driver answers from the host.
    public protocol VolumeFiles {
        /// realpath(3), or nil when the path does not exist.
        func resolve(_ path: String) -> String?
        func exists(_ path: String) -> Bool
        /// The backing file a qcow2 image names, or nil.
        func qcow2BackingFile(_ path: String) -> String?
    }

    /// Maps a file system path (or a volume ID) to `(vtype, volume ID)`; nil
    /// when no storage holds it. Image files must exist (they are looked up
    /// as the storage lists them, a linked clone with its base).
    public static func pathToVolumeID(_ path: String, storages: [FileStorage],
                                      files: some VolumeFiles) throws(Failure) -> (vtype: String, volumeID: String)? {
        if let (storage, volname) = parseVolumeID(path) {
            guard let definition = storages.first(where: { $0.id == storage }) else { return nil }
            let volume = try parseVolname(volname, storageType: definition.type)
            return (volume.vtype, path)
        }
        let resolved = files.resolve(path) ?? path
        for storage in storages.sorted(by: { $0.id < $1.id }) {
            func directory(_ vtype: String) -> String {
                storage.path + "/" + (storage.contentDirectories[vtype] ?? contentSubdirectories[vtype]!)
            }
            func under(_ vtype: String) -> String? {
                let prefix = directory(vtype) + "/"
                return resolved.hasPrefix(prefix) ? String(resolved.dropFirst(prefix.count)) : nil
            }
            if let rest = under("images"), let groups = match(rest, imageFilePattern) {
                let vmid = groups[1]!, name = groups[2]!
                guard let parsed = try? parseNameDir(name), files.exists(resolved) else { continue }
                if parsed.format == "qcow2", let backing = files.qcow2BackingFile(resolved),
                   let base = match(backing, backingFilePattern) {
                    return ("images", "\(storage.id):\(base[1]!)/\(base[2]!)/\(vmid)/\(name)")
                }
                return ("images", "\(storage.id):\(vmid)/\(name)")
            }
            if let rest = under("iso"), match(rest, isoFilePattern) != nil { return ("iso", "\(storage.id):iso/\(rest)") }
            if let rest = under("vztmpl"), match(rest, templateFilePattern) != nil {
                return ("vztmpl", "\(storage.id):vztmpl/\(rest)")
            }
            if let rest = under("rootdir"), match(rest, digitsPattern) != nil { return ("rootdir", "\(storage.id):rootdir/\(rest)") }
            if let rest = under("backup"), match(rest, backupFilePattern) != nil { return ("backup", "\(storage.id):backup/\(rest)") }
            if let rest = under("snippets"), match(rest, plainFilePattern) != nil { return ("snippets", "\(storage.id):snippets/\(rest)") }
            if let rest = under("import"), match(rest, importFilePattern) != nil {
                return ("import", "\(storage.id):import/\(rest)")
            }
        }
        return nil
    }

    /// What a qcow2 image's header says: the guest-visible size and where the backing file's name (a linked clone's
    /// base) is, parsed from the first 32 bytes without running qemu-img. Reading the file is the caller's (a driver's).
    public struct QCOW2Header: Sendable, Equatable {
        /// The bytes to read from the start of an image.
        public static let length = 32

        public var virtualSize: UInt64
        /// Offset and length of the backing file name; nil without a backing file.
        public var backingFileName: (offset: UInt64, length: Int)?

        /// nil when the bytes are not a qcow2 header.
        public init?(_ header: [UInt8]) {
            guard header.count >= Self.length, header.prefix(4) == [0x51, 0x46, 0x49, 0xFB] else { return nil }
            func number(_ range: Range<Int>) -> UInt64 { header[range].reduce(UInt64(0)) { $0 << 8 | UInt64($1) } }
            virtualSize = number(24..<32)
            let offset = number(8..<16), size = number(16..<20)
            backingFileName = offset > 0 && size > 0 && size < 4096 ? (offset, Int(size)) : nil
        }

        public static func == (lhs: QCOW2Header, rhs: QCOW2Header) -> Bool {
            lhs.virtualSize == rhs.virtualSize && lhs.backingFileName?.offset == rhs.backingFileName?.offset
                && lhs.backingFileName?.length == rhs.backingFileName?.length
        }
    }

    // MARK: backup archives

    /// What a vzdump archive name says.
    public struct ArchiveInfo: Equatable, Sendable {
        public var type: String
        public var format: String
        public var compression: String?
        public var decompressor: [String]?
        public var filename: String
        public var vmid: Int?
        public var ctime: Int?
        public var isStandardName: Bool
        public var logFilename: String?
        public var notesFilename: String?
    }

    public static func archiveInfo(_ archive: String, timeZone: TimeZone = .current) throws(Failure) -> ArchiveInfo {
        let base = archive.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? archive
        guard let groups = match(base, archivePattern) else {
            throw Failure("ERROR: couldn't determine archive info from '\(archive)'\n")
        }
        let type = groups[2]!, fileExtension = groups[3]!, compression = groups[4]
        let format = fileExtension == "tgz" ? "tar" : String(fileExtension.prefix { $0 != "." })
        let effectiveCompression = fileExtension == "tgz" ? "gz" : compression
        var info = ArchiveInfo(type: type, format: format, compression: effectiveCompression,
                               decompressor: decompressor(format: format, compression: effectiveCompression),
                               filename: base, isStandardName: false)
        let standard = regex("(vzdump-" + type + #"-([1-9][0-9]{2,8})-(\d{4})_(\d{2})_(\d{2})-(\d{2})_(\d{2})_(\d{2}))\."#
                             + NSRegularExpression.escapedPattern(for: fileExtension))
        if let parts = match(base, standard) {
            info.logFilename = parts[1]! + ".log"
            info.notesFilename = base + ".notes"
            info.vmid = Int(parts[2]!)
            var components = DateComponents()
            components.year = Int(parts[3]!)
            components.month = Int(parts[4]!)
            components.day = Int(parts[5]!)
            components.hour = Int(parts[6]!)
            components.minute = Int(parts[7]!)
            components.second = Int(parts[8]!)
            var calendar = Calendar(identifier: .gregorian)
            calendar.timeZone = timeZone
            info.ctime = calendar.date(from: components).map { Int($0.timeIntervalSince1970) }
            info.isStandardName = true
        }
        return info
    }

    static func decompressor(format: String, compression: String?) -> [String]? {
        guard let compression else { return nil }
        switch (format, compression) {
        case ("tar", "gz"): return ["tar", "-z"]
        case ("tar", "lzo"): return ["tar", "--lzop"]
        case ("tar", "zst"): return ["tar", "--zstd"]
        case ("tar", "bz2"): return ["tar", "--bzip2"]
        case ("vma", "gz"): return ["zcat"]
        case ("vma", "lzo"): return ["lzop", "-d", "-c"]
        case ("vma", "zst"): return ["zstd", "-q", "-d", "-c"]
        case ("vma", "bz2"): return ["bzcat", "-q"]
        default: return nil
        }
    }

    // MARK: backup retention

    /// One backup as retention sees it; `mark` is the verdict: keep,
    /// remove, protected (never removed) or renamed (not a standard name).
    public struct PruneEntry: Equatable, Sendable {
        public var volumeID: String
        public var ctime: Int
        public var vmid: Int?
        public var type: String
        public var protected: Bool
        public var mark: String?

        public init(volumeID: String, ctime: Int, vmid: Int?, type: String = "unknown", protected: Bool = false, mark: String? = nil) {
            self.volumeID = volumeID
            self.ctime = ctime
            self.vmid = vmid
            self.type = type
            self.protected = protected
            self.mark = mark
        }
    }

    /// Marks a storage's backups by the `prune-backups` options (`keep-last`,
    /// `keep-hourly`, ... `keep-all`), per guest and type, newest first,
    /// each option covering what the shorter ones left. Nothing is removed here.
    public static func markBackups(_ backups: [PruneEntry], keep: [String: Int], vmid: Int? = nil, type: String? = nil,
                                   timeZone: TimeZone = .current) -> [PruneEntry] {
        var list: [PruneEntry] = []
        var groups: [String: [Int]] = [:]
        for backup in backups {
            if let vmid, backup.vmid != vmid { continue }
            let volname = parseVolumeID(backup.volumeID)?.volname ?? backup.volumeID
            let info = try? archiveInfo(volname, timeZone: timeZone)
            let backupType = info?.type ?? "unknown"
            if let type, type != backupType { continue }
            var entry = PruneEntry(volumeID: backup.volumeID, ctime: backup.ctime, vmid: info?.vmid ?? backup.vmid, type: backupType)
            if let info, info.isStandardName, let ctime = info.ctime, let owner = entry.vmid {
                entry.ctime = ctime
                groups["\(backupType)/\(owner)", default: []].append(list.count)
            } else {
                entry.mark = "renamed"
            }
            if backup.protected { entry.mark = "protected" }
            list.append(entry)
        }
        for indices in groups.values {
            var group = indices.map { (index: $0, entry: list[$0]) }
            markGroup(&group, keep: keep, timeZone: timeZone)
            for member in group { list[member.index] = member.entry }
        }
        return list
    }

    static func markGroup(_ group: inout [(index: Int, entry: PruneEntry)], keep: [String: Int], timeZone: TimeZone) {
        let positive = keep.filter { $0.key != "keep-all" && $0.value > 0 }
        if (keep["keep-all"] ?? 0) > 0 || positive.isEmpty {
            for index in group.indices where group[index].entry.mark == nil || group[index].entry.mark == "remove" {
                group[index].entry.mark = "keep"
            }
            return
        }
        group.sort { $0.entry.ctime > $1.entry.ctime }
        var calendar = Calendar(identifier: .iso8601)
        calendar.timeZone = timeZone
        func parts(_ ctime: Int) -> DateComponents {
            calendar.dateComponents([.year, .month, .day, .hour, .weekOfYear, .yearForWeekOfYear],
                                    from: Date(timeIntervalSince1970: TimeInterval(ctime)))
        }
        let periods: [(String, (Int) -> String)] = [
            ("keep-last", { String($0) }),
            ("keep-hourly", { let p = parts($0); return "\(p.hour!)/\(p.day!)/\(p.month!)/\(p.year!)" }),
            ("keep-daily", { let p = parts($0); return "\(p.day!)/\(p.month!)/\(p.year!)" }),
            ("keep-weekly", { let p = parts($0); return "\(p.weekOfYear!)/\(p.yearForWeekOfYear!)" }),
            ("keep-monthly", { let p = parts($0); return "\(p.month!)/\(p.year!)" }),
            ("keep-yearly", { let p = parts($0); return "\(p.year!)" }),
        ]
        for (option, period) in periods {
            guard let count = keep[option], count > 0 else { continue }
            var alreadyKept = Set<String>()
            for member in group where member.entry.mark == "keep" { alreadyKept.insert(period(member.entry.ctime)) }
            var newlyKept = Set<String>()
            for index in group.indices {
                let id = period(group[index].entry.ctime)
                if group[index].entry.mark != nil || alreadyKept.contains(id) { continue }
                if !newlyKept.contains(id) {
                    if newlyKept.count >= count { break }
                    newlyKept.insert(id)
                    group[index].entry.mark = "keep"
                } else {
                    group[index].entry.mark = "remove"
                }
            }
        }
        for index in group.indices where group[index].entry.mark == nil { group[index].entry.mark = "remove" }
    }

    // MARK: naming new volumes

    /// The first free `vm-<vmid>-disk-<n>` (or `subvol-...`) name, as upstream allocates.
    public static func nextDiskName(existing: [String], vmid: Int, format: String?, addFormatSuffix: Bool, allowsSubvol: Bool) -> String? {
        let prefix = format == "subvol" ? "subvol" : "vm"
        let suffix = addFormatSuffix ? "." + (format ?? "") : ""
        let pattern = allowsSubvol ? regex(#"(vm|base|subvol|basevol)-"# + String(vmid) + #"-disk-(\d+)"#)
            : regex("(vm|base)-" + String(vmid) + #"-disk-(\d+)"# + NSRegularExpression.escapedPattern(for: suffix))
        var used = Set<Int>()
        for name in existing { if let groups = search(name, pattern), let number = groups[2].flatMap({ Int($0) }) { used.insert(number) } }
        for index in 0..<1024 where !used.contains(index) { return "\(prefix)-\(vmid)-disk-\(index)\(suffix)" }
        return nil
    }
}
