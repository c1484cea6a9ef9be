import Testing
import VhostUser
@testable import VhostTarget

/// `SessionBudget`: what one session may have the daemon map (issue 19
/// item 4), and `ByteSize`, how the limits are given and shown.
@Suite struct SessionBudgetTests {
    static let gib: UInt64 = 1 << 30
    static let budget = SessionBudget(limits: SessionLimits())

    static func refusal(_ body: () throws -> Void) -> String? {
        SessionMessageValidatorTests.refusal(body)
    }

    @Test func defaultsFitAThousandTenantsInTheAddressSpace() {
        let limits = SessionLimits()
        #expect(limits.maxMemoryBytes == 64 * Self.gib)
        #expect(limits.maxRequestsPerQueue == 1024)
        // 1,000 sessions at the limit, each with its largest log: under half of 128 TiB.
        let perSession = limits.maxMemoryBytes + Self.budget.logAllowance
        #expect(1000 * perSession < (128 << 40) / 2)
        #expect(Self.budget.logAllowance == 4 << 20)
    }

    /// The log counts against the memory limit only beyond the allowance.
    @Test func memoryLimitLeavesRoomForTheDirtyLog() {
        let b = Self.budget
        #expect(b.memoryLimit(withLog: 0) == 64 * Self.gib)
        #expect(b.memoryLimit(withLog: b.logAllowance) == 64 * Self.gib)
        #expect(b.memoryLimit(withLog: b.logAllowance + 4096) == 64 * Self.gib - 4096)
        #expect(b.memoryLimit(withLog: 1 << 40) == 0)
        #expect(b.memoryLimit(withLog: .max) == 0)
    }

    /// What QEMU sends (`vhost_get_log_size`: whole words of 64 pages up to
    /// the highest guest-physical end) passes, at migration start and when
    /// QEMU grows the log before a bigger table (hot-plug while logging).
    @Test func logsQEMUSendsPass() throws {
        let b = Self.budget
        // A 64 GiB guest: 2 GiB below 4 GiB, 62 GiB above.
        let end = 66 * Self.gib
        let log = DirtyLog.bytesCovering(guestPhysicalEnd: end)
        #expect(log == end / (64 * 4096) * 8)
        try b.checkLog(size: log, guestPhysicalEnd: end, mappedMemory: 64 * Self.gib)
        // Before a 16 GiB DIMM appears above it: the new table's log plus VHOST_LOG_BUFFER.
        let grown = DirtyLog.bytesCovering(guestPhysicalEnd: end + 17 * Self.gib) + DirtyLog.frontendSlackBytes
        try b.checkLog(size: grown, guestPhysicalEnd: end, mappedMemory: 60 * Self.gib)
        // Before any memory table (never from QEMU, harmless): what the limit could need.
        try b.checkLog(size: 4096, guestPhysicalEnd: 0, mappedMemory: 0)
    }

    @Test func logBeyondWhatTheTableCanNeedIsRefused() {
        let b = Self.budget
        let end: UInt64 = 16 << 20
        let needed = DirtyLog.bytesCovering(guestPhysicalEnd: end + 64 * Self.gib) + 4096
        #expect(needed == 2 * 1024 * 1024 + 512 + 4096)
        #expect(Self.refusal { try b.checkLog(size: needed, guestPhysicalEnd: end, mappedMemory: end) } == nil)
        #expect(Self.refusal { try b.checkLog(size: 1 << 40, guestPhysicalEnd: end, mappedMemory: end) }
            == "SET_LOG_BASE asks for a dirty log of 1.0 TiB (1099511627776 bytes), more than the memory table needs: "
            + "2.0 MiB (2101760 bytes) covers its guest-physical end 0x1000000, hot-plug up to the session limit of "
            + "64.0 GiB (68719476736 bytes) and QEMU's 4 KiB buffer")
        #expect(Self.refusal { try b.checkLog(size: needed + 1, guestPhysicalEnd: end, mappedMemory: end) } != nil)
    }

    /// A few pages at a huge guest-physical address: the log they need
    /// counts against the limit, so the session never maps more than the
    /// limit and the allowance together.
    @Test func logOfASparseHighTableCountsAgainstTheLimit() {
        let b = Self.budget
        let end: UInt64 = 1 << 52  // log: 128 GiB
        let log = DirtyLog.bytesCovering(guestPhysicalEnd: end)
        #expect(log == 128 * Self.gib)
        #expect(Self.refusal { try b.checkLog(size: log, guestPhysicalEnd: end, mappedMemory: 4096) }
            == "SET_LOG_BASE asks for a dirty log of 128.0 GiB (137438953472 bytes); with the 4.0 KiB (4096 bytes) "
            + "of guest memory mapped that exceeds the session limit of 64.0 GiB (68719476736 bytes) (--max-session-memory)")
        // At 2^48 the log is 8 GiB: within the limit beside 4 KiB of memory.
        #expect(Self.refusal {
            try b.checkLog(size: DirtyLog.bytesCovering(guestPhysicalEnd: 1 << 48), guestPhysicalEnd: 1 << 48, mappedMemory: 4096)
        } == nil)
        #expect(Self.refusal { try b.checkLog(size: .max, guestPhysicalEnd: .max, mappedMemory: 0) } != nil)
    }

    @Test func memoryRefusalNamesWhatWasAskedAndTheLimit() {
        let b = Self.budget
        #expect(b.memoryRefusal(mappedBytes: 100 << 40, regions: 8, limit: 64 * Self.gib).reason
            == "SET_MEM_TABLE asks to map 100.0 TiB (109951162777600 bytes) of guest memory in 8 regions, "
            + "over the session limit of 64.0 GiB (68719476736 bytes) (--max-session-memory)")
        #expect(b.memoryRefusal(mappedBytes: 64 * Self.gib, regions: 1, limit: 63 * Self.gib).reason
            == "SET_MEM_TABLE asks to map 64.0 GiB (68719476736 bytes) of guest memory in 1 region, "
            + "over the session limit of 64.0 GiB (68719476736 bytes) (63.0 GiB (67645734912 bytes) beside the dirty log) "
            + "(--max-session-memory)")
    }

    @Test func byteSizesParseAndPrint() {
        #expect(ByteSize.parse("64G") == 64 * Self.gib)
        #expect(ByteSize.parse("64GiB") == 64 * Self.gib)
        #expect(ByteSize.parse("64g") == 64 * Self.gib)
        #expect(ByteSize.parse("1t") == 1 << 40)
        #expect(ByteSize.parse("512K") == 512 << 10)
        #expect(ByteSize.parse("3M") == 3 << 20)
        #expect(ByteSize.parse("4096") == 4096)
        for bad in ["", "G", "-1G", "1.5G", "64X", "64 G", "99999999999T", "١٢G"] {
            #expect(ByteSize.parse(bad) == nil, "\(bad)")
        }
        #expect(ByteSize.describe(0) == "0 bytes")
        #expect(ByteSize.describe(1023) == "1023 bytes")
        #expect(ByteSize.describe(1536) == "1.5 KiB (1536 bytes)")
        #expect(ByteSize.describe(64 * Self.gib) == "64.0 GiB (68719476736 bytes)")
        #expect(ByteSize.describe(.max) == "16777215.9 TiB (18446744073709551615 bytes)")
    }
}
