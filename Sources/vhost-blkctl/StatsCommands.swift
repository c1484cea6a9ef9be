import ArgumentParser
import VhostBlkAPI

extension IOStatResetModeName: ExpressibleByArgument {}

struct BdevGetIostat: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevGetIostatParams.method,
        abstract: "Display current I/O statistics of all the blockdevs or specified blockdev.")
    @Option(name: [.customShort("b"), .long], help: "Name of the Blockdev") var name: String?
    @Option(help: "Bdev names to obtain I/O statistics from, comma-separated") var names: String?
    @Flag(name: [.customShort("c"), .long], help: "Display per channel (virtqueue) IO stats for specified device")
    var perChannel = false
    @Option(help: "Mode to reset I/O statistics after getting: all, maxmin, error, none") var resetMode: IOStatResetModeName?

    func run() throws {
        let list = names.map { $0.split(separator: ",").map(String.init) }
        try invoke(BdevGetIostatParams(name: name, names: list, perChannel: perChannel, resetMode: resetMode), style: .pretty)
    }
}

struct BdevResetIostat: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevResetIostatParams.method, abstract: "Reset I/O statistics of all the blockdevs or specified blockdev.")
    @Option(name: [.customShort("b"), .long], help: "Name of the Blockdev") var name: String?
    @Option(name: [.customShort("m"), .long], help: "Mode to reset I/O statistics: all, maxmin, error, none")
    var mode: IOStatResetModeName?

    func run() throws { try invoke(BdevResetIostatParams(name: name, mode: mode), style: .none) }
}

struct BdevGetLatency: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: BdevGetLatencyParams.method,
        abstract: "Display latency percentiles (ns) per operation of all the blockdevs or specified blockdev.")
    @Option(name: [.customShort("b"), .long], help: "Name of the Blockdev") var name: String?

    func run() throws { try invoke(BdevGetLatencyParams(name: name), style: .pretty) }
}

struct FrameworkGetReactors: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: FrameworkGetReactorsParams.method, abstract: "Display list of all reactors")

    func run() throws { try invoke(FrameworkGetReactorsParams(), style: .pretty) }
}

struct ThreadGetStats: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: ThreadGetStatsParams.method, abstract: "Display current statistics of all the threads")

    func run() throws { try invoke(ThreadGetStatsParams(), style: .pretty) }
}
