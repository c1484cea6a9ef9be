import VhostUser

/// What one frontend session may make the daemon hold, so that no tenant's
/// excess makes another tenant fail (issue 19 item 4). The defaults let
/// 1,000 sessions at their limits fit in the 128 TiB x86-64 user address
/// space with half of it to spare.
public struct SessionLimits: Sendable, Equatable {
    /// Address space one session's guest memory may take: every region of
    /// its memory table as mapped (`--max-session-memory`). 64 GiB: 1,000
    /// sessions at the limit take 62.5 TiB.
    public var maxMemoryBytes: UInt64 = 64 << 30
    /// Requests one queue may have in flight (`--max-requests-per-queue`):
    /// its request slots, whatever its ring size. 1024 is twice what an
    /// engine holds per reactor (512), so it never limits a queue's depth
    /// there; a queue costs ~4.5 MiB of address space at this many slots.
    public var maxRequestsPerQueue = 1024

    /// Bounds of `--max-session-memory`: 1 MiB up to the x86-64 user address space.
    public static let memoryRange: ClosedRange<UInt64> = (1 << 20)...(128 << 40)
    /// Bounds of `--max-requests-per-queue`: up to the largest ring (virtio 1.2 §2.7).
    public static let requestsRange: ClosedRange<Int> = 1...32768

    public init() {}
}

/// The budget's checks: pure functions of what a frontend asks and what
/// its session holds, each failure a `SessionRefusal` whose reason names
/// what was asked and the limit (the session's logger adds the controller
/// and the frontend's pid).
///
/// Guest memory (vhost-user spec, "Memory access") counts as the address
/// space its mappings take. The dirty log ("Migration") must fit the memory
/// table: one bit per 4 KiB page up to its highest guest-physical address,
/// plus what memory hot-plug within the limit could add above it (QEMU
/// grows the log before it sends the bigger table: `vhost_commit`), plus
/// QEMU's 4 KiB buffer. A log beyond `logAllowance` counts against the
/// limit with the guest memory, so a table of a few pages at a huge
/// guest-physical address cannot buy a huge log.
struct SessionBudget {
    let limits: SessionLimits

    /// Dirty-log bytes that never count against the memory limit: the log
    /// of a guest-physical span twice the limit (room for the PCI hole and
    /// hot-plug alignment), 4 MiB at the default.
    var logAllowance: UInt64 {
        let (span, overflow) = limits.maxMemoryBytes.multipliedReportingOverflow(by: 2)
        return DirtyLog.bytesCovering(guestPhysicalEnd: overflow ? .max : span)
    }

    /// The address space a memory table may take while `logBytes` of dirty log are mapped.
    func memoryLimit(withLog logBytes: UInt64) -> UInt64 {
        let counted = logBytes > logAllowance ? logBytes - logAllowance : 0
        return limits.maxMemoryBytes > counted ? limits.maxMemoryBytes - counted : 0
    }

    /// Why a SET_MEM_TABLE (or an ADD_MEM_REG, `request`) that would leave
    /// `regions` regions mapping `mappedBytes` is refused (over `limit`).
    func memoryRefusal(mappedBytes: UInt64, regions: Int, limit: UInt64, request: String = "SET_MEM_TABLE") -> SessionRefusal {
        var reason = "\(request) asks to map \(ByteSize.describe(mappedBytes)) of guest memory in \(regions) "
            + "region\(regions == 1 ? "" : "s"), over the session limit of \(ByteSize.describe(limits.maxMemoryBytes))"
        if limit < limits.maxMemoryBytes {
            reason += " (\(ByteSize.describe(limit)) beside the dirty log)"
        }
        return SessionRefusal(reason + " (--max-session-memory)")
    }

    /// SET_LOG_BASE of `size` bytes while the memory table ends at
    /// `guestPhysicalEnd` and maps `mappedMemory` bytes.
    func checkLog(size: UInt64, guestPhysicalEnd: UInt64, mappedMemory: UInt64) throws(SessionRefusal) {
        let (reach, overflow) = guestPhysicalEnd.addingReportingOverflow(limits.maxMemoryBytes)
        let needed = DirtyLog.bytesCovering(guestPhysicalEnd: overflow ? .max : reach) + DirtyLog.frontendSlackBytes
        guard size <= needed else {
            throw SessionRefusal(
                "SET_LOG_BASE asks for a dirty log of \(ByteSize.describe(size)), more than the memory table needs: "
                    + "\(ByteSize.describe(needed)) covers its guest-physical end 0x\(String(guestPhysicalEnd, radix: 16)), "
                    + "hot-plug up to the session limit of \(ByteSize.describe(limits.maxMemoryBytes)) "
                    + "and QEMU's 4 KiB buffer")
        }
        let limit = memoryLimit(withLog: size)
        guard mappedMemory <= limit else {
            throw SessionRefusal(
                "SET_LOG_BASE asks for a dirty log of \(ByteSize.describe(size)); with the "
                    + "\(ByteSize.describe(mappedMemory)) of guest memory mapped that exceeds the session limit of "
                    + "\(ByteSize.describe(limits.maxMemoryBytes)) (--max-session-memory)")
        }
    }
}

/// Byte counts as options take them and log lines show them.
public enum ByteSize {
    private static let units: [(suffix: String, shift: UInt64)] = [("T", 40), ("G", 30), ("M", 20), ("K", 10)]

    /// `BYTES`, or a number with a binary suffix: `K`, `M`, `G` or `T`,
    /// alone or as `KiB`... (any case). Nil when malformed or over 2^64 - 1.
    public static func parse(_ text: String) -> UInt64? {
        var digits = Substring(text)
        var shift: UInt64 = 0
        let upper = text.uppercased()
        for unit in units {
            for form in [unit.suffix + "IB", unit.suffix] where upper.hasSuffix(form) {
                digits = digits.dropLast(form.count)
                shift = unit.shift
                break
            }
            if shift != 0 { break }
        }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let value = UInt64(digits) else { return nil }
        let (scaled, overflow) = value.multipliedReportingOverflow(by: 1 << shift)
        return overflow ? nil : scaled
    }

    /// "100.0 TiB (109951162777600 bytes)": the largest binary unit it
    /// reaches, to a tenth, then the exact count.
    public static func describe(_ bytes: UInt64) -> String {
        for unit in units where bytes >= 1 << unit.shift {
            let whole = bytes >> unit.shift
            let tenths = ((bytes & ((1 << unit.shift) - 1)) * 10) >> unit.shift  // remainder < 2^40: no overflow
            return "\(whole).\(tenths) \(unit.suffix)iB (\(bytes) bytes)"
        }
        return "\(bytes) bytes"
    }
}
