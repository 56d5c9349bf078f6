/// Everything that can go wrong in the cache store, each case with a message an operator can act on.
///
/// The server maps these at its edge: `diskFull` switches the disk tier off (memory-only, HARDENING
/// §10), `bodyChecksumMismatch` / `bodyMissing` abort the response being streamed (the client sees a
/// truncation, never a corrupt 200, HARDENING §13), everything else is logged and counted.
public enum CacheStoreError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The cache directory (or a file in it) could not be created or written.
    case directoryNotWritable(path: String, reason: String)
    /// Another DiskTier (in this or another process) holds the directory's lock file.
    case directoryLocked(path: String)
    /// The filesystem is out of space, or below the configured free-space floor.
    case diskFull(path: String)
    /// A body block did not match the CRC32C recorded in the index; the object has been dropped.
    case bodyChecksumMismatch(key: String, path: String)
    /// A body file is missing or shorter than the index says; the object has been dropped.
    case bodyMissing(key: String, path: String)
    /// The object was replaced or removed (a newer version stored, a purge, a ban, eviction or
    /// expiry) between its lookup and the opening of its body: not damage, the request fetches it.
    case bodyGone(key: String)
    /// SQLite returned an error code.
    case sqlite(code: Int32, message: String, operation: String)
    /// The index database is damaged or not a Lacquer index.
    case indexCorrupt(path: String, reason: String)
    /// A file operation failed for a reason other than a full disk.
    case ioFailed(operation: String, path: String, reason: String)
    /// The tier was closed; it accepts no further calls.
    case closed(path: String)

    public var description: String {
        switch self {
        case .directoryNotWritable(let path, let reason):
            return "cache directory '\(path)' cannot be created or written (\(reason)); "
                + "check that the path is a directory the lacquer user owns, or choose another with the disk cache option"
        case .directoryLocked(let path):
            return "cache directory '\(path)' is in use by another Lacquer process (lock file '\(path)/lacquer.lock' is held); "
                + "stop the other instance or give this one its own cache directory"
        case .diskFull(let path):
            return "the filesystem holding '\(path)' is full or below the free-space floor; "
                + "the disk cache stops writing until space is freed (objects are kept in memory only)"
        case .bodyChecksumMismatch(let key, let path):
            return "cached body of '\(key)' failed its CRC32C check (file '\(path)'); "
                + "the object was dropped and will be fetched again. Repeated failures point at failing storage"
        case .bodyMissing(let key, let path):
            return "cached body of '\(key)' is missing or truncated (file '\(path)'); "
                + "the object was dropped and will be fetched again. Was the cache directory changed by hand?"
        case .bodyGone(let key):
            return "cached body of '\(key)' was replaced or removed while it was being opened; it is fetched again"
        case .sqlite(let code, let message, let operation):
            return "disk cache index error during \(operation): \(message) (SQLite code \(code))"
        case .indexCorrupt(let path, let reason):
            return "disk cache index '\(path)' is unusable (\(reason)); it is moved aside and the disk cache starts empty"
        case .ioFailed(let operation, let path, let reason):
            return "disk cache \(operation) failed for '\(path)': \(reason)"
        case .closed(let path):
            return "disk cache '\(path)' is closed"
        }
    }
}
