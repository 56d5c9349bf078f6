import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `--user`: run as an unprivileged user once the listeners (possibly on ports below 1024) are
/// bound, as nginx's workers and varnishd's `-j unix,user=` do.
enum PrivilegeDrop {
    struct Account {
        var name: String
        var uid: uid_t
        var gid: gid_t
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func lookUp(_ name: String) -> Account? {
        guard let entry = getpwnam(name) else { return nil }
        return Account(name: name, uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid)
    }

    /// Creates `directory` if needed and gives it, and everything in it, to `account` (only
    /// when running as root; otherwise there is nothing to hand over).
    static func handOver(directory: String, to account: Account) throws(Failure) {
        guard geteuid() == 0 else { return }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw Failure(description: "cannot create \(directory)")
        }
        var paths = [directory]
        if let enumerator = FileManager.default.enumerator(atPath: directory) {
            for case let relative as String in enumerator {
                paths.append(directory + "/" + relative)
            }
        }
        for path in paths where lchown(path, account.uid, account.gid) != 0 {
            throw Failure(description: "cannot hand \(path) to \(account.name): \(String(cString: strerror(errno)).lowercased())")
        }
    }

    /// Switches the whole process (every thread: glibc applies set*id to all) to `account`.
    static func become(_ account: Account) throws(Failure) {
        if geteuid() == account.uid { return }
        guard geteuid() == 0 else {
            throw Failure(description: "only root can switch to another user (running as uid \(geteuid()))")
        }
        guard initgroups(account.name, account.gid) == 0, setgid(account.gid) == 0, setuid(account.uid) == 0 else {
            throw Failure(description: "cannot switch to \(account.name): \(String(cString: strerror(errno)).lowercased())")
        }
        guard setuid(0) != 0 else {
            throw Failure(description: "root privileges could be regained after switching to \(account.name)")
        }
    }
}
