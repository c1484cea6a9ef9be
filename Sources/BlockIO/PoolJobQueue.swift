import Posix

/// A `ThreadPoolEngine`'s jobs, oldest first, with how many run per file
/// (under `PoolShared.jobs`' lock).
///
/// A worker takes the oldest job whose file has fewer than `perFileLimit`
/// running. So a file whose requests hang (a dead NFS server, a frozen
/// filesystem, a failing disk retrying) holds at most that many workers, and
/// `workersWanted` tells the engine when other files' jobs find no idle
/// worker: it starts more. One busy file never grows the pool.
///
/// Workers wait on a semaphore with a token per job. A token whose worker
/// found only jobs of files at their limit is owed: the next worker to
/// finish a job takes a job in its place, without a token.
struct PoolJobQueue {
    let perFileLimit: Int
    /// Set at shutdown: workers with nothing to run exit.
    var stopping = false
    /// Jobs running now.
    private(set) var busy = 0
    private var items: [PoolJob] = []
    private var head = 0
    private var running: [FileDescriptor: Int] = [:]
    private var waitingPerFile: [FileDescriptor: Int] = [:]
    private var owedTokens = 0

    init(perFileLimit: Int) { self.perFileLimit = max(perFileLimit, 1) }

    /// Jobs waiting to run.
    var waitingCount: Int { items.count - head }

    mutating func append(_ batch: [PoolJob]) {
        items.append(contentsOf: batch)
        for job in batch { waitingPerFile[job.fileDescriptor, default: 0] += 1 }
    }

    /// For a worker holding a token: the oldest job that may run, claimed;
    /// nil when none may (the token is then owed to a held job).
    mutating func take() -> PoolJob? {
        if let job = claimOldestRunnable() { return job }
        if waitingCount > 0 { owedTokens += 1 }
        return nil
    }

    /// For a worker that finished `job`: a job to run next in place of an
    /// owed token, if one may run now.
    mutating func finish(_ job: PoolJob) -> PoolJob? {
        busy -= 1
        let fd = job.fileDescriptor
        let left = running[fd, default: 1] - 1
        running[fd] = left > 0 ? left : nil
        guard owedTokens > 0, let next = claimOldestRunnable() else { return nil }
        owedTokens -= 1
        return next
    }

    /// How many more workers than the `workers` there are it takes for every
    /// waiting job that may run now to have one.
    func workersWanted(workers: Int) -> Int {
        let idle = workers - busy
        guard waitingCount > idle else { return 0 }
        var runnable = 0
        for (fd, waiting) in waitingPerFile {
            runnable += min(waiting, max(perFileLimit - running[fd, default: 0], 0))
        }
        return max(runnable - idle, 0)
    }

    private mutating func claimOldestRunnable() -> PoolJob? {
        guard let index = items[head...].firstIndex(where: { running[$0.fileDescriptor, default: 0] < perFileLimit }) else {
            return nil
        }
        let job = items[index]
        if index == head {
            head += 1
        } else {
            items.remove(at: index)
        }
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        }
        let fd = job.fileDescriptor
        running[fd, default: 0] += 1
        let left = waitingPerFile[fd, default: 1] - 1
        waitingPerFile[fd] = left > 0 ? left : nil
        busy += 1
        return job
    }
}

extension PoolJob {
    /// The file the job works on: the unit `PoolJobQueue` limits.
    var fileDescriptor: FileDescriptor {
        switch op {
        case .readv(let fd, _, _, _), .writev(let fd, _, _, _), .fdatasync(let fd), .fallocate(let fd, _, _, _),
             .read(let fd, _, _):
            return fd
        }
    }
}
