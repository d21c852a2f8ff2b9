import CSQLite
import Foundation

/// A node's SQLite database read beside its running daemon (read-only, as an administrator would).
enum NodeDatabase {
    /// The global version in a node's database (row 0), read-only beside the running daemon.
    static func version(_ path: String) -> UInt64? {
        rows(path, "SELECT version FROM tree WHERE inode = 0").first.flatMap { UInt64($0[0]) }
    }

    static func rows(_ path: String, _ sql: String) -> [[String]] {
        var handle: OpaquePointer?
        guard sqlite3_open_v2(path, &handle, SQLITE_OPEN_READONLY, nil) == SQLITE_OK else { return [] }
        defer { sqlite3_close_v2(handle) }
        sqlite3_busy_timeout(handle, 5_000)
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(handle, sql, -1, &statement, nil) == SQLITE_OK else { return [] }
        defer { sqlite3_finalize(statement) }
        var result: [[String]] = []
        while sqlite3_step(statement) == SQLITE_ROW {
            result.append((0..<sqlite3_column_count(statement)).map { column in
                sqlite3_column_text(statement, column).map { String(cString: $0) } ?? ""
            })
        }
        return result
    }

    /// A node's database as the tree it describes: path → "dir INODE" or "file INODE BYTES-HASH", as `tree` shows a mount.
    static func tree(_ path: String) -> [String: String] {
        let rows = rows(path, "SELECT inode, parent, type, name, hex(data) FROM tree WHERE inode != 0")
        var byInode: [String: [String]] = [:]
        for row in rows { byInode[row[0]] = row }
        func fullPath(_ row: [String]) -> String {
            var names = [row[3]]
            var parent = row[1]
            while parent != "0", let up = byInode[parent] {
                names.append(up[3])
                parent = up[1]
            }
            return names.reversed().joined(separator: "/")
        }
        var tree: [String: String] = [:]
        for row in rows {
            if row[2] == "4" {
                tree[fullPath(row)] = "dir \(row[0])"
            } else {
                let bytes = stride(from: 0, to: row[4].count, by: 2).map { offset -> UInt8 in
                    let start = row[4].index(row[4].startIndex, offsetBy: offset)
                    return UInt8(row[4][start..<row[4].index(start, offsetBy: 2)], radix: 16)!
                }
                tree[fullPath(row)] = "file \(row[0]) \(bytes.count) bytes, \(bytes.hashValue)"
            }
        }
        return tree
    }
}
