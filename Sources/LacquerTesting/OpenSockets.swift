import Foundation

/// What a server under test holds open, counted so that other tests running at the same time in
/// the same process do not blur the figure: TCP connections by port (from `/proc/net/tcp` and
/// `tcp6`) and open files below a folder (from `/proc/self/fd`).
public enum OpenSockets {
    /// TCP connections whose local port is `port` (the server's side of its clients'
    /// connections), in any state but LISTEN, TIME_WAIT and CLOSE.
    public static func connections(localPort port: Int) -> Int {
        Self.entries().filter { $0.localPort == port }.count
    }

    /// TCP connections whose remote port is `port` (a client's side, e.g. the cache's
    /// connections to its origin), in any state but LISTEN, TIME_WAIT and CLOSE.
    public static func connections(remotePort port: Int) -> Int {
        Self.entries().filter { $0.remotePort == port }.count
    }

    /// Descriptors of this process open on files below `folder`.
    public static func files(under folder: String) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.filter { fd in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)") else {
                return false
            }
            return target.hasPrefix(folder)
        }.count
    }

    private static func entries() -> [(localPort: Int, remotePort: Int)] {
        var result: [(Int, Int)] = []
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count > 3 else { continue }
                // 0A LISTEN, 06 TIME_WAIT, 07 CLOSE: not a connection anyone holds.
                guard !["0A", "06", "07"].contains(fields[3]) else { continue }
                guard let local = fields[1].split(separator: ":").last.flatMap({ Int($0, radix: 16) }),
                    let remote = fields[2].split(separator: ":").last.flatMap({ Int($0, radix: 16) })
                else { continue }
                result.append((local, remote))
            }
        }
        return result
    }
}
