import Posix
import Testing
@testable import VhostTarget

/// `ControlCPUs.resolve`: where the threads other than reactors run, and
/// `CPUSet`'s list form (proc(5)'s `Cpus_allowed_list`).
@Suite struct ControlCPUsUnitTests {
    @Test func defaultIsTheAllowedCPUsLessTheReactors() throws {
        let placement = try ControlCPUs.resolve(requested: nil, reactors: CPUSet([0, 2]), allowed: CPUSet([0, 1, 2, 3, 5]))
        #expect(placement.cpus == CPUSet([1, 3, 5]))
        #expect(!placement.explicit)
        #expect(placement.describe(reactors: CPUSet([0, 2])) == "control threads pinned to CPU(s) 1,3,5 (allowed 0-3,5 less the reactors' 0,2)")
    }

    @Test func noCPUApartLeavesThemUnpinned() throws {
        let placement = try ControlCPUs.resolve(requested: nil, reactors: CPUSet([0, 1]), allowed: CPUSet([0, 1]))
        #expect(placement.cpus == nil)
        #expect(placement.effective == CPUSet([0, 1]))
        #expect(placement.describe(reactors: CPUSet([0, 1])).hasPrefix("control threads not pinned"))
    }

    @Test func explicitCPUsMustBeAllowed() throws {
        let allowed = CPUSet([0, 1, 2, 3])
        let named = try ControlCPUs.resolve(requested: "[1-2]", reactors: CPUSet([1]), allowed: allowed)
        #expect(named.cpus == CPUSet([1, 2]) && named.explicit)
        #expect(named.describe(reactors: CPUSet([1])).hasSuffix("(--control-cpus; they share CPU(s) 1 with reactors)"))
        #expect(try ControlCPUs.resolve(requested: "0x8", reactors: CPUSet([0]), allowed: allowed).cpus == CPUSet([3]))
        #expect(throws: ControlCPUsError.self) { try ControlCPUs.resolve(requested: "0x10", reactors: CPUSet([0]), allowed: allowed) }
        #expect(throws: ControlCPUsError.self) { try ControlCPUs.resolve(requested: "[4]", reactors: CPUSet([0]), allowed: allowed) }
        #expect(throws: ControlCPUsError.self) { try ControlCPUs.resolve(requested: "two", reactors: CPUSet([0]), allowed: allowed) }
        #expect(throws: ControlCPUsError.self) { try ControlCPUs.resolve(requested: "[]", reactors: CPUSet([0]), allowed: allowed) }
    }

    @Test func listForm() {
        #expect(CPUSet([0, 1, 2, 5, 7, 8]).list == "0-2,5,7-8")
        #expect(CPUSet([3]).list == "3")
        #expect(CPUSet([]).list == "")
        #expect(CPUSet([0, 1, 2]).subtracting(CPUSet([1])) == CPUSet([0, 2]))
    }
}
