import CShims
import Glibc

/// A set of CPU numbers, written as SPDK writes core masks: "0x3", "3", or a list "[0,2-3]".
public struct CPUSet: Hashable, Sendable, CustomStringConvertible {
    /// Sorted, unique CPU numbers.
    public private(set) var cpus: [Int]

    public init(_ cpus: [Int]) { self.cpus = Array(Set(cpus)).sorted() }

    /// The CPUs this process may run on.
    public static func allowed() -> CPUSet {
        var words = [UInt64](repeating: 0, count: 16)
        let rc = words.withUnsafeMutableBufferPointer { vb_allowed_cpus($0.baseAddress, 16) }
        guard rc == 0 else { return CPUSet([0]) }
        var cpus: [Int] = []
        for (w, word) in words.enumerated() {
            for bit in 0..<64 where word & (UInt64(1) << UInt64(bit)) != 0 { cpus.append(w * 64 + bit) }
        }
        return CPUSet(cpus.isEmpty ? [0] : cpus)
    }

    /// Parses "0x3", "0X3", "3" (hex, as SPDK), or "[0,2-3]". Returns nil on malformed input,
    /// an empty mask, or CPU numbers of 1024 and above.
    public init?(parsing text: String) {
        let s = text.trimmingWhitespace
        var result: [Int] = []
        if s.hasPrefix("[") && s.hasSuffix("]") {
            let body = s.dropFirst().dropLast()
            for part in body.split(separator: ",", omittingEmptySubsequences: false) {
                let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
                guard bounds.count == 1 || bounds.count == 2,
                      let low = Int(bounds[0].trimmingWhitespace), low >= 0, low < 1024 else { return nil }
                let high = bounds.count == 2 ? Int(bounds[1].trimmingWhitespace) : low
                guard let high, high >= low, high < 1024 else { return nil }
                result.append(contentsOf: low...high)
            }
        } else {
            var hex = Substring(s)
            if hex.hasPrefix("0x") || hex.hasPrefix("0X") { hex = hex.dropFirst(2) }
            guard !hex.isEmpty, hex.count <= 256 else { return nil }
            var bit = 0
            for ch in hex.reversed() {
                guard let nibble = ch.hexDigitValue else { return nil }
                for i in 0..<4 where nibble & (1 << i) != 0 { result.append(bit + i) }
                bit += 4
            }
        }
        guard !result.isEmpty, result.allSatisfy({ $0 < 1024 }) else { return nil }
        self.init(result)
    }

    public func isSubset(of other: CPUSet) -> Bool { Set(cpus).isSubset(of: Set(other.cpus)) }

    /// The CPUs of this set that are not in `other` (possibly none).
    public func subtracting(_ other: CPUSet) -> CPUSet { CPUSet(cpus.filter { !other.cpus.contains($0) }) }

    public var isEmpty: Bool { cpus.isEmpty }

    /// The list as proc(5) prints `Cpus_allowed_list`: "0-2,5" ("" when empty).
    public var list: String {
        var parts: [String] = []
        var index = 0
        while index < cpus.count {
            var end = index
            while end + 1 < cpus.count && cpus[end + 1] == cpus[end] + 1 { end += 1 }
            parts.append(end == index ? "\(cpus[index])" : "\(cpus[index])-\(cpus[end])")
            index = end + 1
        }
        return parts.joined(separator: ",")
    }

    /// Hex mask as SPDK prints it: "0x3".
    public var hexMask: String {
        guard let top = cpus.last else { return "0x0" }
        var nibbles = [UInt8](repeating: 0, count: top / 4 + 1)
        for cpu in cpus { nibbles[cpu / 4] |= UInt8(1 << (cpu % 4)) }
        let digits = nibbles.reversed().map { String($0, radix: 16) }.joined()
        let trimmed = digits.drop(while: { $0 == "0" })
        return "0x" + (trimmed.isEmpty ? "0" : trimmed)
    }

    public var description: String { hexMask }
}

extension StringProtocol {
    var trimmingWhitespace: String {
        String(self.drop(while: { $0.isWhitespace }).reversed().drop(while: { $0.isWhitespace }).reversed())
    }
}
