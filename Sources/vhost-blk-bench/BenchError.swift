import VhostUserFrontend

/// Why a benchmark could not run.
enum BenchError: Error, CustomStringConvertible {
    case usage(String)
    case frontend(FrontendError)
    case thread(String)

    var description: String {
        switch self {
        case .usage(let s): return s
        case .frontend(let e): return "vhost-user: \(e)"
        case .thread(let s): return s
        }
    }
}
