import Posix

// The reader and codec tests pin descriptors by number (none is opened or
// closed), and compare the lists they get back: literals and an order keep
// them as short as the numbers they check.
extension FileDescriptor: ExpressibleByIntegerLiteral {
    public init(integerLiteral value: Int32) { self.init(value) }
}

extension FileDescriptor: Comparable {
    public static func < (a: FileDescriptor, b: FileDescriptor) -> Bool { a.rawValue < b.rawValue }
}
