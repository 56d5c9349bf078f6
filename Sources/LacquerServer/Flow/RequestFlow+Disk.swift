import CachePolicy
import CacheStore
import NIOCore
import NIOHTTP1

/// Disk hits: small objects are loaded whole (checksums verified) and promoted into the memory
/// tier; large ones stream from their body file chunk by chunk at the client's pace, each chunk
/// verified before it is sent. A checksum failure before the head is out becomes a miss; after
/// it, the connection is cut, so a client never receives a corrupt body as a complete 200.
extension RequestFlow {
    func deliverFromDisk(_ head: DiskObjectHead, disk: DiskStorage, xStatus: XCacheStatus, detail: String?) {
        self.ctx.objHits = 1
        self.server.servedFromDisk(head, disk: disk)
        if let body = head.prefetchedBody {
            // A small body the lookup read with the head (verified): no second trip to the disk.
            return self.deliverLoaded(self.server.objectFromDisk(head, body: body), xStatus: xStatus, detail: detail)
        }
        let loopBound = NIOLoopBound(self, eventLoop: self.eventLoop)
        if self.server.memory.admits(bodyLength: Int(clamping: head.bodyLength)) {
            disk.load(head, on: self.eventLoop).whenComplete { result in
                let flow = loopBound.value
                switch result {
                case .success(let object):
                    flow.deliverLoaded(object, xStatus: xStatus, detail: detail)
                case .failure(let error):
                    disk.noteReadFailure(error, key: head.key)
                    flow.dispatch(.diskReadFailed(head.key))
                }
            }
            return
        }
        if BodyTransform.needsGunzip(storedHeaders: head.headers, requestHeaders: self.head.headers) {
            // A large gzip body for a client that cannot take gzip: fetch a fresh answer for it.
            self.counters.increment(.cacheBypass)
            return self.dispatch(.codingUnavailable)
        }
        let sendsFiles = FileBody.mayUseVerifiedFile(head, connectionSendsFiles: self.client?.sendsFiles == true, memory: self.server.memory)
        if sendsFiles {
            switch disk.tier.openVerifiedIfCached(head) {
            case .open(let file):
                return self.deliverFromFile(head, file: file, xStatus: xStatus, detail: detail)
            case .notCached:
                if self.head.method != .HEAD { self.counters.increment(.bodyFileNotCached) }
            case .gone:
                break
            }
        }
        disk.openBody(head, keepVerifiedFile: sendsFiles, on: self.eventLoop).whenComplete { result in
            let flow = loopBound.value
            switch result {
            case .success(let reader):
                guard flow.client != nil, let window = flow.writeDiskHead(head, xStatus: xStatus, detail: detail) else {
                    return reader.close()
                }
                flow.diskWindow = window
                flow.diskReader = reader
                flow.dispatch(.headWritten(.disk))
                flow.pumpDisk(disk)
            case .failure(let error):
                disk.noteReadFailure(error, key: head.key)
                flow.dispatch(.diskReadFailed(head.key))
            }
        }
    }

    /// Writes the response head of a disk object whose body is sent from its file; returns the
    /// window of the body the client gets, or nil when no body follows (a HEAD, a 304, a body
    /// vcl_deliver replaced; what follows then is dispatched here).
    private func writeDiskHead(_ head: DiskObjectHead, xStatus: XCacheStatus, detail: String?) -> BodyWindow? {
        let now = self.server.clock()
        let status = CacheStatusValue(
            hit: true, ttl: Int((head.origin + head.ttl - now).rounded(.down)), detail: detail ?? "disk")
        // A stored part of a representation is presented as that representation's 206.
        let part = self.slice == nil ? StoredPart.range(status: head.status, headers: head.headers, bodyLength: Int(head.bodyLength)) : nil
        var storedHeaders = head.headers
        if part != nil { storedHeaders.remove(name: "content-range") }
        let plan = self.writeStoredHead(
            status: part == nil ? head.status : 200, reason: part == nil ? head.reason : "OK", storedHeaders: storedHeaders,
            bodyLength: part?.length ?? Int(head.bodyLength), age: max(0, now - head.origin),
            xStatus: xStatus, cacheStatus: status)
        guard !self.bodySuppressed else { return nil }
        switch plan {
        case .full where part != nil:
            // The lookup took the part for this request's ranges only: never reached.
            self.dispatch(.deliveryFailed)
            return nil
        case .window(let window) where part != nil:
            return BodyWindow(
                ranges: window.ranges, multipart: window.multipart, length: window.length, startingAt: part?.range.lowerBound ?? 0)
        case .full where head.bodyLength > 0:
            let length = Int(head.bodyLength)
            return BodyWindow(ranges: [0...(length - 1)], multipart: nil, length: length)
        case .window(let window):
            return window
        default:
            self.dispatch(.delivered)
            return nil
        }
    }

    /// A disk-only object whose verified body file is open and cached: the head, then the
    /// window's bytes sent from the file (sendfile), on this loop, with no read into memory.
    private func deliverFromFile(_ head: DiskObjectHead, file: OpenBodyFile, xStatus: XCacheStatus, detail: String?) {
        guard let client = self.client, let window = self.writeDiskHead(head, xStatus: xStatus, detail: detail) else { return }
        self.counters.increment(.bodySentFromFile)
        for segment in window.segments() {
            switch segment {
            case .bytes(let bytes):
                client.writeFinalBody(self.allocator.buffer(string: bytes))
            case .body(let range):
                client.writeBodyFile(file, offset: range.lowerBound, count: range.count)
            }
        }
        self.dispatch(.delivered)
    }

    /// A disk object read whole: promoted into memory, then delivered.
    private func deliverLoaded(_ object: StoredObject, xStatus: XCacheStatus, detail: String?) {
        self.server.promoteFromDisk(object, lookedUpAt: self.arrivedAt, cold: self.slice != nil)
        guard self.client != nil else { return }
        let now = self.server.clock()
        let status = CacheStatusValue(hit: true, ttl: Int(object.remainingTTL(at: now).rounded(.down)), detail: detail ?? "disk")
        self.deliver(object, xStatus: xStatus, cacheStatus: status, now: now)
    }

    /// Reads the next chunk and writes it; pauses while the client cannot take more.
    func pumpDisk(_ disk: DiskStorage) {
        guard let reader = self.diskReader else { return }
        guard let client = self.client, self.machine.response == .streaming(.disk) else {
            reader.close()
            self.diskReader = nil
            return
        }
        guard client.isWritable else {
            self.diskReadPaused = true
            return
        }
        let loopBound = NIOLoopBound(self, eventLoop: self.eventLoop)
        disk.read(reader, on: self.eventLoop).whenComplete { result in
            let flow = loopBound.value
            switch result {
            case .success(.some(let chunk)):
                // Only the part of the chunk inside the requested window goes out.
                if let part = flow.diskWindow.take(chunk) {
                    flow.emitBody(part)
                }
                if flow.diskWindow.isComplete {
                    reader.close()
                    flow.diskReader = nil
                    return flow.dispatch(.delivered)
                }
                flow.pumpDisk(disk)
            case .success(.none):
                reader.close()
                flow.diskReader = nil
                flow.dispatch(.delivered)
            case .failure(let error):
                reader.close()
                flow.diskReader = nil
                disk.noteReadFailure(error, key: reader.head.key)
                flow.dispatch(.deliveryFailed)
            }
        }
    }

    /// The client can take more: go on reading the disk body if the pump was paused.
    func resumeDiskIfPaused() -> Bool {
        guard self.diskReadPaused, let disk = self.server.disk else { return false }
        self.diskReadPaused = false
        self.pumpDisk(disk)
        return true
    }
}
