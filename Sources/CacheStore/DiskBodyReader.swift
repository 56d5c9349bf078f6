#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import NIOCore
import Synchronization

/// Streams one object's body from its file, verifying as it goes.
///
/// Bytes are read a 64 KiB block at a time; each block's CRC32C is checked against the index
/// *before* any of its bytes are returned, and the file's length was checked when it was opened.
/// So a caller streaming to a client can only ever send verified bytes: on a mismatch `next`
/// throws, the response is aborted (the client sees a truncation, never a corrupt 200), and the
/// tier has already dropped the row and the file.
///
/// Thread safe (one call at a time is serialised), so it may hop between thread-pool threads.
/// The file descriptor is closed at the end of the body, on `close()`, or when the reader is released.
public final class DiskBodyReader: Sendable {
    /// The object whose body this reads.
    public let head: DiskObjectHead
    /// The body file.
    public let path: String
    /// The body file's version as it was opened (nil for a body kept in the index).
    let fileNote: BodyFileNote?

    private struct State {
        var fd: Int32
        /// The next block to read from the file.
        var nextBlock = 0
        /// The verified, not yet returned, rest of the current block.
        var current: ByteBuffer
        var failed = false
    }

    private let state: Mutex<State>
    private let allocator: ByteBufferAllocator
    private let onFailure: @Sendable (CacheStoreError) -> Void
    /// Called with the open file once its last block is verified (every block was, in order).
    private let onVerifiedWhole: (@Sendable (CInt) -> Void)?

    init(
        head: DiskObjectHead,
        path: String,
        fd: Int32,
        fileNote: BodyFileNote?,
        allocator: ByteBufferAllocator,
        onVerifiedWhole: (@Sendable (CInt) -> Void)? = nil,
        onFailure: @escaping @Sendable (CacheStoreError) -> Void
    ) {
        self.head = head
        self.path = path
        self.fileNote = fileNote
        self.allocator = allocator
        self.onVerifiedWhole = onVerifiedWhole
        self.onFailure = onFailure
        self.state = Mutex(State(fd: fd, current: allocator.buffer(capacity: 0)))
    }

    /// A reader over a body already read and verified (one kept in the index row): no file.
    init(head: DiskObjectHead, path: String, verifiedBody: ByteBuffer, allocator: ByteBufferAllocator) {
        self.head = head
        self.path = path
        self.allocator = allocator
        self.onFailure = { _ in }
        self.onVerifiedWhole = nil
        self.fileNote = nil
        self.state = Mutex(State(fd: -1, nextBlock: head.blockChecksums.count, current: verifiedBody))
    }

    deinit {
        self.close()
    }

    /// Bytes not yet returned by `next`.
    public var remainingBytes: Int64 {
        self.state.withLock { state in
            let unread = self.head.bodyLength - min(self.head.bodyLength, Int64(state.nextBlock) * Int64(BodyFile.blockSize))
            return unread + Int64(state.current.readableBytes)
        }
    }

    /// The next verified chunk of the body (at most `maxBytes`, at most one block), or nil at the end.
    ///
    /// - Throws: `CacheStoreError.bodyChecksumMismatch` or `.bodyMissing` if the file no longer
    ///   matches the index (the object has then been dropped), `.ioFailed` on a read error.
    public func next(maxBytes: Int = 65_536) throws -> ByteBuffer? {
        precondition(maxBytes > 0, "maxBytes must be positive")
        let result: Result<ByteBuffer?, CacheStoreError> = self.state.withLock { state in
            if state.failed { return .failure(.bodyMissing(key: self.head.key.description, path: self.path)) }
            if state.current.readableBytes == 0 {
                guard Int64(state.nextBlock) < Int64(self.head.blockChecksums.count) else {
                    self.closeFile(&state)
                    return .success(nil)
                }
                var block = state.current
                state.current = ByteBuffer()
                block.clear()
                let error = self.readBlock(&state, into: &block)
                state.current = block
                if let error { return .failure(error) }
            }
            let count = min(maxBytes, state.current.readableBytes)
            return .success(state.current.readSlice(length: count))
        }
        return try self.unwrap(result)
    }

    /// Reads the whole remaining body into one buffer, verifying every block.
    func readAll() throws -> ByteBuffer {
        let result: Result<ByteBuffer, CacheStoreError> = self.state.withLock { state in
            if state.failed { return .failure(.bodyMissing(key: self.head.key.description, path: self.path)) }
            var buffer = self.allocator.buffer(capacity: Int(self.head.bodyLength))
            buffer.writeBuffer(&state.current)
            while state.nextBlock < self.head.blockChecksums.count {
                if let error = self.readBlock(&state, into: &buffer) {
                    return .failure(error)
                }
            }
            self.closeFile(&state)
            return .success(buffer)
        }
        return try self.unwrap(result)
    }

    /// Closes the file early (the rest of the body is not needed). Idempotent.
    public func close() {
        self.state.withLock { self.closeFile(&$0) }
    }

    private func unwrap<T>(_ result: Result<T, CacheStoreError>) throws -> T {
        switch result {
        case .success(let value):
            return value
        case .failure(let error):
            switch error {
            case .bodyChecksumMismatch, .bodyMissing:
                self.onFailure(error)
            default:
                break
            }
            throw error
        }
    }

    /// Appends block `state.nextBlock` to `buffer` after checking its CRC32C; nil on success.
    private func readBlock(_ state: inout State, into buffer: inout ByteBuffer) -> CacheStoreError? {
        let block = state.nextBlock
        let offset = Int64(block) * Int64(BodyFile.blockSize)
        let length = Int(min(Int64(BodyFile.blockSize), self.head.bodyLength - offset))
        let fd = state.fd
        var readError: Int32 = 0
        var checksum: UInt32 = 0
        let got = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { raw in
            var done = 0
            while done < length {
                let count = pread(fd, raw.baseAddress! + done, length - done, off_t(offset) + off_t(done))
                if count < 0 {
                    if errno == EINTR { continue }
                    readError = errno
                    return 0
                }
                if count == 0 { break }
                done += count
            }
            checksum = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<done]))
            return done
        }
        let key = self.head.key.description
        if readError != 0 {
            state.failed = true
            self.closeFile(&state)
            return .ioFailed(operation: "read body", path: self.path, reason: BodyFile.describe(readError))
        }
        if got < length {
            state.failed = true
            self.closeFile(&state)
            return .bodyMissing(key: key, path: self.path)
        }
        if checksum != self.head.blockChecksums[block] {
            buffer.moveWriterIndex(to: buffer.writerIndex - got)
            state.failed = true
            self.closeFile(&state)
            return .bodyChecksumMismatch(key: key, path: self.path)
        }
        state.nextBlock += 1
        if state.nextBlock == self.head.blockChecksums.count, let onVerifiedWhole = self.onVerifiedWhole {
            onVerifiedWhole(fd)
        }
        return nil
    }

    private func closeFile(_ state: inout State) {
        if state.fd >= 0 {
            Glibc.close(state.fd)
            state.fd = -1
        }
    }
}
