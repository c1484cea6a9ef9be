import Glibc
import Posix
import Synchronization

/// Verified I/O on a started front end from a background thread: writes a
/// pattern, reads it back, compares, round after round, until stopped. A
/// bystander for hostile-input tests: "another controller doing verified
/// I/O at the same time sees no error" (issue 5).
public final class VerifiedIOLoad: @unchecked Sendable {  // the front end is used only by the load's thread until `stop()` joins it
    /// What the load saw.
    public struct Outcome: Sendable, Equatable {
        /// Completed write + read-back + compare rounds.
        public var rounds: Int
        /// Failed rounds (bad status, wrong data, thrown errors).
        public var errors: Int
        /// The first failure, if any.
        public var firstError: String?
    }

    private let frontend: VhostUserFrontend
    private let sectors: UInt64
    private let state = Mutex<(stop: Bool, outcome: Outcome)>((false, Outcome(rounds: 0, errors: 0, firstError: nil)))
    private var thread: pthread_t?

    /// Starts the load on `frontend` (connected and started), using sectors
    /// `0..<sectors` of its disk and queue 0.
    public init(frontend: VhostUserFrontend, sectors: UInt64 = 256) throws(FrontendError) {
        self.frontend = frontend
        self.sectors = max(1, sectors)
        do {
            thread = try PosixThread.start(name: "verified-io") { [self] in run() }
        } catch {
            throw .system(error)
        }
    }

    /// The outcome so far (while running).
    public var outcome: Outcome { state.withLock { $0.outcome } }

    /// Stops the thread after its current round and returns the outcome.
    @discardableResult
    public func stop() -> Outcome {
        state.withLock { $0.stop = true }
        if let thread { PosixThread.join(thread) }
        thread = nil
        return outcome
    }

    /// Waits until at least `rounds` more rounds completed (or `timeout`); returns whether they did.
    public func waitForRounds(_ rounds: Int, timeout: Duration = .seconds(10)) -> Bool {
        let target = outcome.rounds + rounds
        let deadline = ContinuousClock.now + timeout
        while outcome.rounds < target {
            if ContinuousClock.now >= deadline { return false }
            usleep(5_000)
        }
        return true
    }

    private func run() {
        var round = 0
        while !state.withLock({ $0.stop }) {
            let sector = UInt64(round) % sectors
            let count = 1 + round % 8
            let data = (0..<(count * 512)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ round &* 13) }
            var failure: String?
            do {
                let clampedCount = Int(min(UInt64(count), sectors - sector))
                let slice = Array(data.prefix(clampedCount * 512))
                let w = try frontend.write(sector: sector, data: slice)
                let r = try frontend.read(sector: sector, count: clampedCount)
                if w.status != BlkWire.statusOK { failure = "write at \(sector) status \(w.status)" }
                else if r.status != BlkWire.statusOK { failure = "read at \(sector) status \(r.status)" }
                else if r.data != slice { failure = "read at \(sector) returned other data" }
            } catch {
                failure = "round \(round): \(error)"
            }
            state.withLock { s in
                s.outcome.rounds += 1
                if let failure {
                    s.outcome.errors += 1
                    if s.outcome.firstError == nil { s.outcome.firstError = failure }
                }
            }
            if failure != nil { usleep(10_000) }  // do not spin on a dead session
            round &+= 1
        }
    }
}
