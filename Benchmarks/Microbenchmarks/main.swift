import CachePolicy
import CacheStore
import Foundation
import LacquerServer
import NIOCore
import NIOHTTP1
import VCL


// Microbenchmarks for the hot pieces of a cache hit (issue #7), in one process, each reported
// as nanoseconds per operation (median of 5 runs) and as a ratio to a baseline measured in the
// same run: hashing a 20-byte String with the standard library's Hasher. Build with -c release:
//   LACQUER_BENCHMARKS=1 swift run -c release lacquer-microbench

@inline(never) func blackHole<T>(_ value: T) { withExtendedLifetime(value) {} }

func measure(_ name: String, iterations: Int, _ body: () -> Void) -> Double {
    var runs: [Double] = []
    for _ in 0..<5 {
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<iterations { body() }
        let end = DispatchTime.now().uptimeNanoseconds
        runs.append(Double(end - start) / Double(iterations))
    }
    runs.sort()
    let median = runs[2]
    print(name.padding(toLength: 52, withPad: " ", startingAt: 0) + String(format: "%10.1f ns/op", median))
    return median
}

var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/static/app.css?v=42")
head.headers.add(name: "Host", value: "www.example.com")
head.headers.add(name: "User-Agent", value: "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/120.0")
head.headers.add(name: "Accept", value: "text/css,*/*;q=0.1")
head.headers.add(name: "Accept-Encoding", value: "gzip, deflate, br")
let peer = try SocketAddress(ipAddress: "192.0.2.10", port: 50000)
let local = try SocketAddress(ipAddress: "127.0.0.1", port: 6081)
let builtin = VCLLoader.builtin(purgeACL: .loopback)

print("Lacquer microbenchmarks (\(ProcessInfo.processInfo.activeProcessorCount) cores)")
// Baseline: hashing a 20-byte string with the standard library's Hasher (a known, small cost).
let baselineText = "/static/app.css?v=42"
let baseline = measure("baseline: Hasher over a 20-byte String", iterations: 2_000_000) {
    var hasher = Hasher()
    hasher.combine(baselineText)
    blackHole(hasher.finalize())
}

let recvHash = measure("builtin vcl_recv + vcl_hash (one request)", iterations: 200_000) {
    var ctx = FlowContext(head: head, xid: 1, peer: peer, local: local)
    let a = try? builtin.run(.recv, context: &ctx)
    let b = try? builtin.run(.hash, context: &ctx)
    blackHole((a, b, ctx.hashParts))
}
let contextOnly = measure("  of which: FlowContext creation", iterations: 200_000) {
    let ctx = FlowContext(head: head, xid: 1, peer: peer, local: local)
    blackHole(ctx)
}

let key = measure("CacheKey (target, host) + FNV-1a digest", iterations: 1_000_000) {
    blackHole(CacheKey(host: "www.example.com", target: "/static/app.css?v=42").digest)
}

let requestBytes = Array(
    ("GET /static/app.css?v=42 HTTP/1.1\r\nHost: www.example.com\r\n"
        + "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/120.0\r\n"
        + "Accept: text/css,*/*;q=0.1\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n").utf8)
let limits = Limits()
let fastHead = measure("hit fast lane: read a 4-field request head", iterations: 1_000_000) {
    requestBytes.withUnsafeBytes { blackHole(FastRequestHead.classify($0, limits: limits)) }
}

var responseHeaders = HTTPHeaders()
responseHeaders.add(name: "Cache-Control", value: "public, max-age=3600, s-maxage=7200, stale-while-revalidate=60, stale-if-error=86400")
let cc = measure("Cache-Control parse (5 directives)", iterations: 500_000) {
    blackHole(CacheControl(headers: responseHeaders))
}

let memory = MemoryTier(capacityBytes: 256 << 20)
var storedKeys: [CacheKey] = []
for i in 0..<10_000 {
    let k = CacheKey(host: "h", target: "/o/\(i)")
    storedKeys.append(k)
    var body = ByteBuffer()
    body.writeRepeatingByte(0x61, count: 1024)
    _ = memory.insert(
        StoredObject(
            key: k, variant: "", varyNames: [], status: 200, reason: "OK", headers: responseHeaders, body: body,
            requestTime: 0, responseTime: 0, origin: 0, ttl: 1e9, grace: 0, keep: 0, mustRevalidate: false))
}
let stored = storedKeys
var index = 0
let lookup = measure("MemoryTier lookup + touch (10k objects, 1 thread)", iterations: 1_000_000) {
    index = (index &+ 7919) % stored.count
    let found = memory.variants(for: stored[index])
    if let first = found.first { memory.touch(first) }
    blackHole(found)
}
let twoThreads: Double = {
    let iterations = 1_000_000
    let start = DispatchTime.now().uptimeNanoseconds
    DispatchQueue.concurrentPerform(iterations: 2) { thread in
        var i = thread * 4999
        for _ in 0..<iterations {
            i = (i &+ 7919) % stored.count
            let found = memory.variants(for: stored[i])
            if let first = found.first { memory.touch(first) }
            blackHole(found)
        }
    }
    let perOp = Double(DispatchTime.now().uptimeNanoseconds - start) / Double(2 * iterations)
    print("MemoryTier lookup + touch, 2 threads".padding(toLength: 52, withPad: " ", startingAt: 0) + String(format: "%10.1f ns/op (wall time / total ops)", perOp))
    return perOp
}()

let plainObject = StoredObject(
    key: CacheKey(host: "h", target: "/plain"), variant: "", varyNames: [], status: 200, reason: "OK",
    headers: originHeaders(1), body: ByteBuffer(repeating: 0x61, count: 1024),
    requestTime: 0, responseTime: 0, origin: 0, ttl: 1e9, grace: 0, keep: 0, mustRevalidate: false)
let allocator = ByteBufferAllocator()
let plainEncode = measure("plain hit: stored fields + 6 fields + 1 KiB body", iterations: 500_000) {
    blackHole(
        PlainHit.encode(
            plainObject, withBody: true, age: 12, xStatus: .hit, cacheStatus: CacheStatusValue(hit: true, ttl: 3588),
            close: false, viaLine: "Via: 1.1 lacquer\r\n", cacheName: "Lacquer", allocator: allocator))
}

let serialise = measure("response head: copy stored headers, add 4 fields", iterations: 500_000) {
    var h = responseHeaders
    h.add(name: "Age", value: "12")
    h.add(name: "Via", value: "1.1 lacquer")
    h.add(name: "X-Cache-Status", value: "HIT")
    h.add(name: "Cache-Status", value: "Lacquer; hit; ttl=3588")
    blackHole(h)
}

print("")
print("ratios to the baseline (Hasher over 20 bytes, \(String(format: "%.1f", baseline)) ns):")
for (name, value) in [
    ("builtin VCL per request", recvHash), ("FlowContext creation", contextOnly), ("cache key", key),
    ("Cache-Control parse", cc), ("memory lookup", lookup), ("memory lookup, 2 threads", twoThreads),
    ("head serialisation", serialise), ("fast lane head reading", fastHead), ("plain hit encoding", plainEncode),
] {
    print("  " + name.padding(toLength: 34, withPad: " ", startingAt: 0) + String(format: "%8.1fx", value / baseline))
}

// Resident bytes per stored 1 KiB object (the process's resident set before and after storing
// 100,000 objects with the header fields an nginx origin sends), split into its parts. Each
// phase only allocates, so the growth of the resident set is what the objects take.
func heapInUse() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    return fields.count > 1 ? (Int(fields[1]) ?? 0) * 4096 : 0
}

func originHeaders(_ i: Int) -> HTTPHeaders {
    var h = HTTPHeaders()
    h.add(name: "Server", value: "nginx/1.22.1")
    h.add(name: "Date", value: "Tue, 24 Nov 2026 19:59:\(10 + i % 50) GMT")
    h.add(name: "Content-Type", value: "application/octet-stream")
    h.add(name: "Content-Length", value: "1024")
    h.add(name: "Last-Modified", value: "Tue, 24 Nov 2026 17:08:\(10 + i % 50) GMT")
    h.add(name: "ETag", value: "\"6543a1b2-\(400 + i)\"")
    h.add(name: "Cache-Control", value: "max-age=86400")
    h.add(name: "Accept-Ranges", value: "bytes")
    return h
}

print("")
print("resident bytes per stored 1 KiB object (100,000 objects, payload 1024):")
do {
    let count = 100_000
    var keep: [Any] = []
    keep.reserveCapacity(count)
    let b0 = heapInUse()
    for i in 0..<count { keep.append(originHeaders(i)) }
    let b1 = heapInUse()
    for i in 0..<count {
        var body = ByteBuffer()
        body.reserveCapacity(1024)
        body.writeRepeatingByte(UInt8(i & 0xFF), count: 1024)
        keep.append(body)
    }
    let b2 = heapInUse()
    for i in 0..<count { keep.append(CacheKey(host: "127.0.0.1:8080", target: "/obj/\(i)")) }
    let b3 = heapInUse()
    print("  header fields (HTTPHeaders)      \((b1 - b0) / count) B")
    print("  body ByteBuffer (1024 payload)   \((b2 - b1) / count) B")
    print("  cache key                        \((b3 - b2) / count) B")
    let tier = MemoryTier(capacityBytes: 256 << 20)
    let t0 = heapInUse()
    for i in 0..<count {
        var body = ByteBuffer()
        body.reserveCapacity(1024)
        body.writeRepeatingByte(UInt8(i & 0xFF), count: 1024)
        _ = tier.insert(
            StoredObject(
                key: CacheKey(host: "127.0.0.1:8080", target: "/obj/\(i)"), variant: "", varyNames: [], status: 200,
                reason: "OK", headers: originHeaders(i), body: body, requestTime: 0, responseTime: 0, origin: 0,
                ttl: 86400, grace: 0, keep: 0, mustRevalidate: false))
    }
    let t1 = heapInUse()
    print("  whole object in the memory tier  \((t1 - t0) / count) B (target for the process: 1631 B)")
    blackHole(tier)
    blackHole(keep)
}

// A disk-tier lookup of a 16 KiB object whose body is kept in the index (the disk-hit scenario
// of Benchmarks/run.sh: 200 such objects), on one thread, against the memory lookup above.
do {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lacquer-microbench-\(getpid())").path
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let tier = try DiskTier(configuration: DiskTier.Configuration(directory: directory))
    defer { tier.close() }
    var keys: [CacheKey] = []
    for i in 0..<200 {
        let key = CacheKey(host: "127.0.0.1:8080", target: "/16k?d=\(i)")
        try tier.store(
            StoredObject(
                key: key, variant: "", varyNames: [], status: 200, reason: "OK", headers: originHeaders(i),
                body: ByteBuffer(repeating: UInt8(i & 0xFF), count: 16384), requestTime: 0, responseTime: 0, origin: 0,
                ttl: 86400, grace: 0, keep: 0, mustRevalidate: false))
        keys.append(key)
    }
    var i = 0
    let diskLookup = measure("DiskTier lookup, 16 KiB body in the index (200)", iterations: 50_000) {
        i = (i &+ 7) % keys.count
        blackHole(try? tier.lookup(keys[i]))
    }
    let nowaitLookup = measure("DiskTier lookupWithoutWaiting, same objects", iterations: 50_000) {
        i = (i &+ 7) % keys.count
        blackHole(tier.lookupWithoutWaiting(keys[i]))
    }
    let head = try tier.lookup(keys[0])[0]
    let toObject = measure("  disk head + body -> StoredObject", iterations: 50_000) {
        blackHole(head.storedObject(body: head.prefetchedBody ?? ByteBuffer(), hiddenFields: .none))
    }
    print("  disk lookup / memory lookup      " + String(format: "%8.1fx", diskLookup / lookup))
    print("  without waiting / memory lookup  " + String(format: "%8.1fx", nowaitLookup / lookup))
    blackHole(toObject)
} catch {
    print("disk lookup: \(error)")
}
