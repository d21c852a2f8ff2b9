import Resources

/// A unified diff of two texts (the standard library's difference of their lines, shown as `diff -u` shows it).
public enum UnifiedDiff {
    public static func render(old: String, new: String, oldName: String, newName: String, context: Int = 3, colors: Bool = false) -> String {
        let a = lines(old)
        let b = lines(new)
        let difference = b.difference(from: a)
        var removed = Set<Int>()
        var inserted = Set<Int>()
        for change in difference {
            switch change {
            case .remove(let offset, _, _): removed.insert(offset)
            case .insert(let offset, _, _): inserted.insert(offset)
            }
        }
        // The edit script: (mark, line, old index, new index).
        var script: [(mark: Character, text: Substring, old: Int, new: Int)] = []
        var i = 0
        var j = 0
        while i < a.count || j < b.count {
            if i < a.count, removed.contains(i) {
                script.append(("-", a[i], i, j))
                i += 1
            } else if j < b.count, inserted.contains(j) {
                script.append(("+", b[j], i, j))
                j += 1
            } else {
                script.append((" ", a[i], i, j))
                i += 1
                j += 1
            }
        }
        let changed = script.indices.filter { script[$0].mark != " " }
        guard !changed.isEmpty else { return "" }
        func paint(_ text: String, _ code: String) -> String { colors ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text }
        var out = paint("--- \(oldName)", "1") + "\n" + paint("+++ \(newName)", "1") + "\n"
        var hunkStart = 0
        while hunkStart < changed.count {
            // Changes closer than twice the context share a hunk.
            var hunkEnd = hunkStart
            while hunkEnd + 1 < changed.count, changed[hunkEnd + 1] - changed[hunkEnd] <= 2 * context { hunkEnd += 1 }
            let first = max(0, changed[hunkStart] - context)
            let last = min(script.count - 1, changed[hunkEnd] + context)
            let rows = script[first...last]
            let oldCount = rows.filter { $0.mark != "+" }.count
            let newCount = rows.filter { $0.mark != "-" }.count
            let oldStart = oldCount == 0 ? rows.first!.old : rows.first!.old + 1
            let newStart = newCount == 0 ? rows.first!.new : rows.first!.new + 1
            out += paint("@@ -\(oldStart),\(oldCount) +\(newStart),\(newCount) @@", "36") + "\n"
            for row in rows {
                let line = String(row.mark) + row.text
                out += (row.mark == "-" ? paint(line, "31") : row.mark == "+" ? paint(line, "32") : line) + "\n"
            }
            hunkStart = hunkEnd + 1
        }
        // By byte: a text ending in "\r\n" ends in one Character that is not "\n".
        func endsWithNewline(_ text: String) -> Bool { text.utf8.last == UInt8(ascii: "\n") }
        if !old.isEmpty && !endsWithNewline(old) || !new.isEmpty && !endsWithNewline(new) { out += "\\ No newline at end of file\n" }
        return out
    }

    public static func lines(_ text: String) -> [Substring] {
        var lines = splitLines(text)
        if lines.last == "" { lines.removeLast() }
        return lines
    }
}
