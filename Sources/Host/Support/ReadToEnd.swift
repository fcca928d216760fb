import Foundation

/// Reads a file descriptor to its end, retrying a read that a signal interrupted (`EINTR`).
///
/// Foundation's `readDataToEndOfFile()` ends the process with a `try!` when a read is interrupted, which any signal with
/// a handler (a child's `SIGCHLD`, for one) can cause.
enum ReadToEnd {
    struct Failure: Error, CustomStringConvertible {
        let code: Int32
        var description: String { "cannot read: \(String(cString: strerror(code)))" }
    }

    static func bytes(of descriptor: Int32) throws(Failure) -> [UInt8] {
        var collected: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count > 0 {
                collected.append(contentsOf: buffer[0..<count])
            } else if count == 0 {
                return collected
            } else if errno != EINTR {
                throw Failure(code: errno)
            }
        }
    }
}
