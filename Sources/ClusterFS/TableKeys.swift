import Glibc

/// A 64-bit number (an inode, a FUSE node id, a change's counter) as the key of the tables looked up several times per
/// replicated change. It hashes by a 64-bit mixer (MurmurHash3's finalizer over the number and the table's seed) in
/// place of SipHash, which showed as a tenth of a change's cost outside SQLite. The keys are numbers this daemon and
/// its peers hand out, not chosen by whoever writes files, so SipHash's defence against chosen collisions buys
/// nothing here, and the mixer's low bits (the bucket) depend on every bit of the number.
struct NumberKey: Hashable {
    var value: UInt64

    init(_ value: UInt64) { self.value = value }

    func hash(into hasher: inout Hasher) { hasher.combine(value) }

    /// What Dictionary and Set bucket by (not `hash(into:)`). The seed differs per table and per size; it must go into
    /// the mix, or copying one table into another of a different size turns quadratic.
    func _rawHashValue(seed: Int) -> Int {
        var mixed = value ^ UInt64(bitPattern: Int64(seed))
        mixed ^= mixed >> 33
        mixed &*= 0xff51_afd7_ed55_8ccd
        mixed ^= mixed >> 33
        mixed &*= 0xc4ce_b9fe_1a85_ec53
        mixed ^= mixed >> 33
        return Int(truncatingIfNeeded: mixed)
    }
}

/// An entry's name as the key of its directory's table: equal when the bytes are, as every Linux file system and the
/// original compare names (a String compares by canonical equivalence, so "café" precomposed and decomposed were one
/// name: the second could not be created and opened the first). Hashed by FNV-1a over the bytes once, when the key is
/// made, then mixed as `NumberKey` is, in place of SipHash: names are looked up several times per change, and a table
/// rehashes its keys when it deletes or grows. Names are chosen by whoever may write /etc/pve, so FNV starts from a
/// basis drawn per process: names that collide in one daemon do not in another.
struct EntryName: Hashable {
    let string: String
    private let bytesHash: UInt64

    init(_ string: String) {
        var bytes = string
        self.string = string
        bytesHash = bytes.withUTF8 { utf8 in
            utf8.reduce(Self.basis) { hash, byte in (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        }
    }

    private static let basis = UInt64.random(in: 1...UInt64.max)

    static func == (left: EntryName, right: EntryName) -> Bool {
        guard left.bytesHash == right.bytesHash else { return false }
        var left = left.string, right = right.string
        return left.withUTF8 { leftBytes in
            right.withUTF8 { rightBytes in
                leftBytes.count == rightBytes.count
                    && (leftBytes.isEmpty || memcmp(leftBytes.baseAddress!, rightBytes.baseAddress!, leftBytes.count) == 0)
            }
        }
    }

    func hash(into hasher: inout Hasher) { hasher.combine(bytesHash) }

    func _rawHashValue(seed: Int) -> Int { NumberKey(bytesHash)._rawHashValue(seed: seed) }
}
