import Glibc
import Posix

/// A queue's used-buffer notification: the vhost-user call eventfd
/// (virtio 1.2 §2.7.7; vhost-user spec, "SET_VRING_CALL"), nil while the
/// frontend has given none.
///
/// The session makes every call eventfd non-blocking when it receives it.
/// QEMU creates its eventfds with EFD_NONBLOCK already, so its end sees no
/// change; a frontend that hands over a blocking one and never reads it
/// can no longer hold the reactor in write(2). A write that fails with
/// EAGAIN found the counter at its maximum (2^64 - 2): the eventfd is
/// readable already, so the frontend still sees a signal and none is lost.
///
/// The session owns the descriptor (it closes what `replace` returns);
/// this holds the number only: `FileDescriptor?` is an Int32 and a tag
/// byte, so a signal costs what the bare write(2) did.
struct CallSignal {
    private(set) var fd: FileDescriptor?

    init(fd: FileDescriptor?) { self.fd = fd }

    var isSet: Bool { fd != nil }

    /// Replaces the eventfd; returns the old one for the caller to close.
    mutating func replace(with newFD: FileDescriptor?) -> FileDescriptor? {
        let old = fd
        fd = newFD
        return old
    }

    /// Adds one to the counter, unless there is no eventfd. Never blocks.
    @inline(__always)
    func signal() {
        guard let fd else { return }
        _ = try? fd.addToCounter(1)
    }
}
