#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSQLiteNoWait
import NIOCore
import Synchronization

/// Body files on disk: where they live, how they are written (temp file, optional fsync, rename)
/// and the small POSIX helpers around them.
///
/// Layout under the cache directory:
/// ```
/// index.sqlite            the SQLite index (WAL: index.sqlite-wal, index.sqlite-shm)
/// lacquer.lock            flock(LOCK_EX) while a DiskTier has the directory open
/// tmp/<id>.tmp            a body being written; never referenced by a row
/// bodies/ab/cd/<id>       a complete body: ab = id & 0xFF, cd = (id >> 8) & 0xFF, id as 16 hex digits
/// ```
/// A body file is only the raw bytes; its length and per-block CRC32C live in the index row,
/// which is committed only after the rename, so a row never points at a partial body.
enum BodyFile {
    /// Every body is checksummed in blocks of this size (the last block may be shorter).
    static let blockSize = 65_536

    static func fileName(_ id: Int64) -> String {
        String(self.relativePath(id).utf8.suffix(16))!
    }

    /// The two-level directory a body lives in, relative to the cache directory.
    static func shardDirectory(_ id: Int64) -> String {
        String(self.relativePath(id).utf8.prefix(self.relativePathLength - 17))!
    }

    static func relativePath(_ id: Int64) -> String {
        String(unsafeUninitializedCapacity: self.relativePathLength) { out in
            self.writeRelativePath(id, into: out)
            return self.relativePathLength
        }
    }

    /// The length of `bodies/ab/cd/<16 hex digits>`.
    static let relativePathLength = 29

    /// Writes the layout above for `id` as bytes (a hit that sends a file builds no String).
    static func writeRelativePath(_ id: Int64, into out: UnsafeMutableBufferPointer<UInt8>) {
        let bits = UInt64(bitPattern: id)
        let digits: StaticString = "0123456789abcdef"
        var at = 0
        func put(_ byte: UInt8) {
            out[at] = byte
            at += 1
        }
        func hex(_ value: UInt64, digitCount: Int) {
            for shift in stride(from: (digitCount - 1) * 4, through: 0, by: -4) {
                put(digits.utf8Start[Int((value >> UInt64(shift)) & 0xF)])
            }
        }
        for byte in "bodies/".utf8 { put(byte) }
        hex(bits & 0xFF, digitCount: 2)
        put(UInt8(ascii: "/"))
        hex((bits >> 8) & 0xFF, digitCount: 2)
        put(UInt8(ascii: "/"))
        hex(bits, digitCount: 16)
    }

    static func tempRelativePath(_ id: Int64) -> String {
        "tmp/" + self.fileName(id) + ".tmp"
    }

    /// The file id a body or temp file name encodes, if it is one of ours.
    static func id(fromFileName name: String) -> Int64? {
        var name = Substring(name)
        if name.hasSuffix(".tmp") { name = name.dropLast(4) }
        guard name.utf8.count == 16, let value = UInt64(name, radix: 16) else { return nil }
        return Int64(bitPattern: value)
    }

    /// The number of checksum blocks a body of `length` bytes has.
    static func blockCount(length: Int64) -> Int {
        Int((length + Int64(self.blockSize) - 1) / Int64(self.blockSize))
    }

    /// Writes `body` to `tempPath`, optionally fsyncs it, renames it to `finalPath` (creating the
    /// shard directory if needed) and, with `sync`, fsyncs that directory so the rename is durable
    /// before the index row is committed. Returns the CRC32C of each 64 KiB block.
    ///
    /// On any failure the temp file is removed; ENOSPC/EDQUOT become `.diskFull(path: directory)`.
    static func write(_ body: ByteBuffer, tempPath: String, finalPath: String, directory: String, sync: Bool) throws
        -> [UInt32]
    {
        let fd = Glibc.open(tempPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw self.error(errno, operation: "create temp body file", path: tempPath, directory: directory)
        }
        var checksums: [UInt32] = []
        do {
            defer { Glibc.close(fd) }
            checksums.reserveCapacity(self.blockCount(length: Int64(body.readableBytes)))
            try body.withUnsafeReadableBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let end = min(offset + self.blockSize, bytes.count)
                    let block = UnsafeRawBufferPointer(rebasing: bytes[offset..<end])
                    checksums.append(CRC32C.checksum(block))
                    try self.writeAll(fd: fd, block, path: tempPath, directory: directory)
                    offset = end
                }
            }
            if sync, fsync(fd) != 0 {
                throw self.error(errno, operation: "fsync body", path: tempPath, directory: directory)
            }
        } catch {
            unlink(tempPath)
            throw error
        }
        if rename(tempPath, finalPath) != 0 {
            var code = errno
            if code == ENOENT {
                // The shard directory does not exist yet: create it and try once more.
                let parent = String(finalPath[..<(finalPath.lastIndex(of: "/") ?? finalPath.endIndex)])
                try? self.makeDirectories(parent)
                code = rename(tempPath, finalPath) == 0 ? 0 : errno
            }
            if code != 0 {
                unlink(tempPath)
                throw self.error(code, operation: "rename body into place", path: finalPath, directory: directory)
            }
        }
        if sync {
            let parent = String(finalPath[..<(finalPath.lastIndex(of: "/") ?? finalPath.endIndex)])
            self.syncDirectory(parent)
        }
        return checksums
    }

    /// The CRC32C of each 64 KiB block of `body` (what `write` returns, for a body kept in the index).
    static func checksums(_ body: ByteBuffer) -> [UInt32] {
        body.withUnsafeReadableBytes { self.checksums($0) }
    }

    /// The CRC32C of each 64 KiB block of `bytes`.
    static func checksums(_ bytes: UnsafeRawBufferPointer) -> [UInt32] {
        var checksums: [UInt32] = []
        checksums.reserveCapacity(self.blockCount(length: Int64(bytes.count)))
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + self.blockSize, bytes.count)
            checksums.append(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[offset..<end])))
            offset = end
        }
        return checksums
    }

    /// Writes all of `bytes` to `fd`, retrying short writes and EINTR.
    static func writeAll(fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String, directory: String) throws {
        var offset = 0
        while offset < bytes.count {
            let written = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw self.error(errno, operation: "write body", path: path, directory: directory)
            }
            if written == 0 {
                throw self.error(ENOSPC, operation: "write body", path: path, directory: directory)
            }
            offset += written
        }
    }

    /// fsyncs a directory (makes a rename or unlink in it durable); failures are ignored.
    static func syncDirectory(_ path: String) {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            _ = fsync(fd)
            Glibc.close(fd)
        }
    }

    /// `mkdir -p`: creates `path` and any missing parents.
    static func makeDirectories(_ path: String) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o755) != 0 {
                let code = errno
                guard code == EEXIST else {
                    throw CacheStoreError.directoryNotWritable(path: path, reason: self.describe(code) + " at '\(current)'")
                }
                var info = stat()
                if stat(current, &info) != 0 || (info.st_mode & S_IFMT) != S_IFDIR {
                    throw CacheStoreError.directoryNotWritable(path: path, reason: "'\(current)' exists and is not a directory")
                }
            }
        }
    }

    /// The entries of a directory (without "." and ".."), or [] if it cannot be read.
    static func listDirectory(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The fraction of the filesystem holding `path` that is free for unprivileged writers,
    /// after `reserving` more bytes; nil if statvfs fails.
    static func freeFraction(_ path: String, reserving bytes: Int64) -> Double? {
        var info = statvfs()
        guard statvfs(path, &info) == 0, info.f_blocks > 0 else { return nil }
        let blockSize = Double(info.f_frsize)
        let total = Double(info.f_blocks) * blockSize
        let available = Double(info.f_bavail) * blockSize - Double(bytes)
        return available / total
    }

    static func describe(_ code: Int32) -> String {
        String(cString: strerror(code)) + " (errno \(code))"
    }

    static func error(_ code: Int32, operation: String, path: String, directory: String) -> CacheStoreError {
        if code == ENOSPC || code == EDQUOT {
            return .diskFull(path: directory)
        }
        return .ioFailed(operation: operation, path: path, reason: self.describe(code))
    }
}

/// A body file known to hold exactly a memory object's body (`StoredObject.bodyFile`): its id
/// and the version of the file (device, inode, change time, size) at the moment that was known.
/// A file written, renamed over or replaced since then is another version and is not sent.
public struct BodyFileNote: Sendable {
    public let id: Int64
    let identity: lacquer_file_identity

    /// The note for file `id` as `fd` (open on it) finds it now; nil if it cannot be read.
    init?(id: Int64, fd: CInt) {
        var identity = lacquer_file_identity()
        guard lacquer_file_identity(fd, &identity) == 0 else { return nil }
        self.id = id
        self.identity = identity
    }

    /// The note for file `id` at `path` as it is now; nil if it cannot be opened.
    init?(id: Int64, path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        self.init(id: id, fd: fd)
    }

    /// The length the file had.
    public var length: Int64 { self.identity.size }
}

/// A body file held open for sending (nginx's `open_file_cache`): one descriptor shared by every
/// send of it, on any thread (each send passes its own offsets), closed when the last holder
/// lets go. A memory object keeps the one of its body (`StoredObject.openBodyFile`) while fewer
/// than `limit` are kept process-wide; beyond that a send opens and closes its own.
public final class OpenBodyFile: Sendable {
    public let descriptor: CInt
    /// Whether this one counts against `limit` (kept by an object).
    let counted: Bool
    private static let kept = Atomic<Int>(0)
    /// A quarter of the descriptors the process may open, so kept files never starve accepts.
    static let limit: Int = {
        var limits = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limits) == 0 else { return 256 }
        return Int(min(limits.rlim_cur / 4, 65_536))
    }()

    /// Takes ownership of `descriptor`; `keep` asks to count it as kept, which it is only while
    /// under the limit.
    init(descriptor: CInt, keep: Bool) {
        self.descriptor = descriptor
        self.counted = keep && Self.kept.wrappingAdd(1, ordering: .relaxed).newValue <= Self.limit
        if keep && !self.counted { Self.kept.wrappingSubtract(1, ordering: .relaxed) }
    }

    deinit {
        close(self.descriptor)
        if self.counted { Self.kept.wrappingSubtract(1, ordering: .relaxed) }
    }
}
