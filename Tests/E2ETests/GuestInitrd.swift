import Foundation

/// Builds a per-test initrd: the base initramfs followed by an uncompressed
/// newc cpio holding `/test.sh`. The kernel unpacks concatenated archives in
/// order; an uncompressed one must start on a 4-byte boundary, so the base is
/// padded with NUL bytes, which the kernel skips.
enum GuestInitrd {
    /// Writes `base` + `/test.sh` (containing `script`) to `output`.
    static func make(base: URL, script: String, output: URL) throws {
        var data = try Data(contentsOf: base)
        while data.count % 4 != 0 { data.append(0) }
        data.append(cpioArchive(files: [("test.sh", 0o100755, Data(script.utf8))]))
        try data.write(to: output)
    }

    /// A newc ("070701") archive with the given regular files and a trailer.
    static func cpioArchive(files: [(name: String, mode: UInt32, contents: Data)]) -> Data {
        var archive = Data()
        var inode: UInt32 = 1
        for file in files {
            appendEntry(to: &archive, name: file.name, mode: file.mode, inode: inode, contents: file.contents)
            inode &+= 1
        }
        appendEntry(to: &archive, name: "TRAILER!!!", mode: 0, inode: 0, contents: Data())
        return archive
    }

    private static func appendEntry(to archive: inout Data, name: String, mode: UInt32, inode: UInt32, contents: Data) {
        let nameBytes = Array(name.utf8) + [0]
        let fields: [UInt32] = [
            inode, mode, 0, 0, 1, 0,  // ino, mode, uid, gid, nlink, mtime
            UInt32(truncatingIfNeeded: contents.count),
            0, 0, 0, 0,  // devmajor, devminor, rdevmajor, rdevminor
            UInt32(truncatingIfNeeded: nameBytes.count), 0,  // namesize, check
        ]
        var header = "070701"
        for field in fields {
            let hex = String(field, radix: 16, uppercase: true)
            header += String(repeating: "0", count: max(0, 8 - hex.count)) + hex
        }
        archive.append(contentsOf: Array(header.utf8))
        archive.append(contentsOf: nameBytes)
        pad(&archive)
        archive.append(contents)
        pad(&archive)
    }

    private static func pad(_ data: inout Data) {
        while data.count % 4 != 0 { data.append(0) }
    }
}
