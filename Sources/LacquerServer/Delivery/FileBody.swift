import CacheStore
import NIOCore

/// A large stored body sent from the disk tier's file with sendfile(2) instead of copied from
/// memory into the socket (nginx's `sendfile on`; Varnish's `-s file` gets the same effect from
/// mmap). The kernel then hands the page cache's pages to the socket: the copy of every body byte
/// into the socket buffer, most of a large hit's CPU, is gone.
///
/// Only when nothing can go wrong that the copy would have avoided:
/// - the connection is HTTP/1.1 over plain TCP (TLS and HTTP/2 need the bytes in user space);
/// - the object's body is at least `minimumBytes` (below that, checking the file and a second
///   syscall cost about what the copy they save does);
/// - the disk tier noted the file as holding exactly this object's body (`StoredObject.bodyFile`:
///   written from these bytes, or read whole with every checksum matching);
/// - the file is still there and still that version (not written to, replaced or removed since:
///   inode, change time, size, links), and every page of it is in the page cache, so sendfile
///   does not wait for the disk on an event loop (`DiskTier.openIfCached`).
/// Otherwise the bytes held in memory are written, as before; a file found gone or changed is
/// forgotten. The descriptor stays open with the object (`OpenBodyFile`) for its next sends.
enum FileBody {
    /// Bodies smaller than this are copied (measured with Benchmarks/scripts/filebody.sh).
    static let minimumBytes = 64 * 1024

    /// Writes `bytes`, the large body of `object`, with `write`; or, when `allowed` and the rules
    /// above hold, a region of its disk file, whose descriptor is held until that write completed
    /// or failed (a client that left fails it).
    static func write(
        _ bytes: ByteBuffer, of object: StoredObject, allowed: Bool, server: ServerContext, loop: any EventLoop,
        _ write: (IOData, EventLoopPromise<Void>?) -> Void
    ) {
        guard allowed, bytes.readableBytes >= Self.minimumBytes, let disk = server.disk else {
            return write(.byteBuffer(bytes), nil)
        }
        switch disk.tier.openIfCached(bodyOf: object) {
        case .open(let file):
            server.counters.increment(.bodySentFromFile)
            Self.writeRegion(of: file, offset: 0, count: bytes.readableBytes, loop: loop, write)
        case .notCached:
            server.counters.increment(.bodyFileNotCached)
            write(.byteBuffer(bytes), nil)
        case .gone:  // no file noted, or no longer the one noted
            write(.byteBuffer(bytes), nil)
        }
    }

    /// Whether a disk hit on `head` may be sent from its verified body file
    /// (`DiskTier.openVerifiedIfCached`): on a connection that sends files, a body of
    /// `minimumBytes` or more that the memory tier does not take (one it takes is loaded into
    /// memory and sent by `write`). The hit lane and the flow ask this same rule.
    static func mayUseVerifiedFile(_ head: DiskObjectHead, connectionSendsFiles: Bool, memory: MemoryTier) -> Bool {
        connectionSendsFiles && head.bodyLength >= Self.minimumBytes && !memory.admits(bodyLength: Int(clamping: head.bodyLength))
    }

    /// Writes `count` bytes of `file` from `offset` as a `FileRegion`. The region's handle borrows
    /// the descriptor `file` owns (it may be shared by sends on other loops: each passes its own
    /// offsets); `file` is held until the write completed or failed (a client that left fails it).
    static func writeRegion(
        of file: OpenBodyFile, offset: Int, count: Int, loop: any EventLoop, _ write: (IOData, EventLoopPromise<Void>?) -> Void
    ) {
        let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: file.descriptor)
        let written = loop.makePromise(of: Void.self)
        written.futureResult.whenComplete { _ in
            _ = try? handle.takeDescriptorOwnership()
            withExtendedLifetime(file) {}
        }
        write(.fileRegion(FileRegion(fileHandle: handle, readerIndex: offset, endIndex: offset + count)), written)
    }
}
