import CSQLite
import Foundation

/// The `tree` table of the original (one row per file or directory, plus row
/// 0 `__version__` carrying the global version), in WAL mode. Every change is
/// one transaction committed before the file system call returns.
final class Database {
    struct Row {
        var inode: UInt64
        var parent: UInt64
        var version: UInt64
        var writer: UInt32
        var mtime: UInt32
        var type: UInt8
        var name: String
        var data: [UInt8]
    }

    struct SQLiteError: Error, CustomStringConvertible {
        var code: Int32
        var message: String
        var description: String { "sqlite error \(code): \(message)" }
    }

    private var handle: OpaquePointer?
    private var replaceStatement: OpaquePointer?
    private var deleteStatement: OpaquePointer?
    private var begin: OpaquePointer?
    private var commit: OpaquePointer?
    private var rollback: OpaquePointer?

    /// Opens (creating if needed) the database; the file is made 0600.
    init(path: String) throws {
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let fd = open(path, O_CREAT | O_RDWR, 0o600)
        if fd >= 0 { close(fd) }
        chmod(path, 0o600)
        try check(sqlite3_open_v2(path, &handle, flags, nil))
        sqlite3_busy_timeout(handle, 10_000)
        // A new database gets 2 KiB pages (SQLite's default is 4 KiB; one made by the original, or before, keeps its own).
        // A change commits two or three pages to the WAL, each copied and checksummed whole: with the small files
        // /etc/pve holds, 2 KiB pages took 7% off all a writing node does per 512 B file and 12% per 4 KiB file
        // (instructions counted with callgrind); 1 KiB pages needed more pages per change and gained less.
        // SQLite's default checkpoint (1000 pages) stays: a WAL as large as the original's 4 MB held twice the frames,
        // and SQLite's work per change grew with them more than the syncs it saved (measured; see ARCHITECTURE.md).
        try execute("PRAGMA page_size=2048")
        try execute("PRAGMA journal_mode=WAL")
        try execute("PRAGMA synchronous=NORMAL")
        try execute("""
            CREATE TABLE IF NOT EXISTS tree (
              inode INTEGER PRIMARY KEY NOT NULL,
              parent INTEGER NOT NULL CHECK(typeof(parent)=='integer'),
              version INTEGER NOT NULL CHECK(typeof(version)=='integer'),
              writer INTEGER NOT NULL CHECK(typeof(writer)=='integer'),
              mtime INTEGER NOT NULL CHECK(typeof(mtime)=='integer'),
              type INTEGER NOT NULL CHECK(typeof(type)=='integer'),
              name TEXT NOT NULL,
              data BLOB)
            """)
        replaceStatement = try prepare("REPLACE INTO tree (inode, parent, version, writer, mtime, type, name, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        deleteStatement = try prepare("DELETE FROM tree WHERE inode = ?")
        begin = try prepare("BEGIN IMMEDIATE")
        commit = try prepare("COMMIT")
        rollback = try prepare("ROLLBACK")
    }

    deinit {
        for statement in [replaceStatement, deleteStatement, begin, commit, rollback] { sqlite3_finalize(statement) }
        sqlite3_close_v2(handle)
    }

    private func check(_ code: Int32) throws {
        guard code == SQLITE_OK || code == SQLITE_DONE || code == SQLITE_ROW else {
            throw SQLiteError(code: code, message: String(cString: sqlite3_errmsg(handle)))
        }
    }

    private func execute(_ sql: String) throws {
        try check(sqlite3_exec(handle, sql, nil, nil, nil))
    }

    private func prepare(_ sql: String) throws -> OpaquePointer? {
        var statement: OpaquePointer?
        try check(sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil))
        return statement
    }

    private func step(_ statement: OpaquePointer?) throws {
        defer { sqlite3_reset(statement) }
        try check(sqlite3_step(statement))
    }

    /// Every row, for startup.
    func loadAll() throws -> [Row] {
        let statement = try prepare("SELECT inode, parent, version, writer, mtime, type, name, data FROM tree")
        defer { sqlite3_finalize(statement) }
        var rows: [Row] = []
        while true {
            let code = sqlite3_step(statement)
            if code == SQLITE_DONE { break }
            try check(code)
            let length = Int(sqlite3_column_bytes(statement, 7))
            var data = [UInt8](repeating: 0, count: length)
            if length > 0, let blob = sqlite3_column_blob(statement, 7) {
                data.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(start: blob, count: length)) }
            }
            rows.append(Row(inode: UInt64(sqlite3_column_int64(statement, 0)), parent: UInt64(sqlite3_column_int64(statement, 1)),
                            version: UInt64(sqlite3_column_int64(statement, 2)), writer: UInt32(sqlite3_column_int64(statement, 3)),
                            mtime: UInt32(sqlite3_column_int64(statement, 4)), type: UInt8(sqlite3_column_int(statement, 5)),
                            name: String(cString: sqlite3_column_text(statement, 6)), data: data))
        }
        return rows
    }

    /// Writes one row through the replace statement. The name and the data are bound where they lie (SQLITE_STATIC, as
    /// the original binds them: no copy): they stay valid until the step inside these closures has returned, and every
    /// write binds both anew before it steps.
    private func write(_ row: Row) throws {
        let s = replaceStatement
        sqlite3_bind_int64(s, 1, Int64(bitPattern: row.inode))
        sqlite3_bind_int64(s, 2, Int64(bitPattern: row.parent))
        sqlite3_bind_int64(s, 3, Int64(bitPattern: row.version))
        sqlite3_bind_int64(s, 4, Int64(row.writer))
        sqlite3_bind_int64(s, 5, Int64(row.mtime))
        sqlite3_bind_int(s, 6, Int32(row.type))
        var name = row.name
        try name.withUTF8 { utf8 in
            try utf8.withMemoryRebound(to: CChar.self) { text in
                if let start = text.baseAddress {
                    sqlite3_bind_text(s, 7, start, Int32(text.count), nil)
                } else {
                    sqlite3_bind_text(s, 7, "", 0, unsafeBitCast(-1, to: sqlite3_destructor_type.self))
                }
                guard row.type != EntryType.directory.rawValue else {
                    sqlite3_bind_null(s, 8)
                    return try step(s)
                }
                try row.data.withUnsafeBytes { bytes in
                    sqlite3_bind_blob(s, 8, bytes.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(bytes.count), nil)
                    try step(s)
                }
            }
        }
    }

    /// Replaces the whole table (a lagging node taking another's tree) in one transaction.
    func replaceAll(with rows: [Row], version: Row) throws {
        try transaction {
            try execute("DELETE FROM tree")
            for row in rows { try write(row) }
            try write(version)
        }
    }

    /// Runs `body` in one transaction, rolled back when it throws.
    private func transaction(_ body: () throws -> Void) throws {
        try step(begin)
        do {
            try body()
            try step(commit)
        } catch {
            try? step(rollback)
            throw error
        }
    }

    /// One durable change (or several, their rows merged): the rows to replace, the inodes to delete, and the new
    /// global version, in a single transaction.
    func apply(replace rows: some Sequence<Row>, delete inodes: [UInt64], version: Row) throws {
        // Begun and ended here rather than through `transaction`: a closure over the generic rows was not specialized,
        // and the rows went through a run-time key path lookup each.
        try step(begin)
        do {
            for inode in inodes {
                sqlite3_bind_int64(deleteStatement, 1, Int64(bitPattern: inode))
                try step(deleteStatement)
            }
            for row in rows { try write(row) }
            try write(version)
            try step(commit)
        } catch {
            try? step(rollback)
            throw error
        }
    }
}
