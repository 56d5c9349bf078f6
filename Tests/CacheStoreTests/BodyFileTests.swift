import Foundation
import NIOCore
import NIOHTTP1
import LacquerTesting
import Testing

@testable import CacheStore

@Suite("BodyFile, CRC32C, HeaderCodec")
struct BodyFileTests {
    @Test("CRC32C check value and incremental updates")
    func crc32c() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        let data = diskTestBytes(100_003, seed: 5)
        let whole = CRC32C.checksum(data)
        let split = data.withUnsafeBytes { raw in
            CRC32C.update(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<777])), UnsafeRawBufferPointer(rebasing: raw[777...]))
        }
        #expect(whole == split)
        // Slicing-by-8 agrees with the bytewise path on unaligned tails.
        for length in 0..<20 {
            let prefix = Array(data.prefix(length))
            var crc: UInt32 = 0
            for byte in prefix { crc = [byte].withUnsafeBytes { CRC32C.update(crc, $0) } }
            #expect(crc == CRC32C.checksum(prefix))
        }
    }

    @Test("the CPU's CRC-32C instruction and the tables agree at every length and alignment")
    func crc32cHardwareMatchesTables() {
        let data = diskTestBytes(70_000, seed: 9)
        // Around the three-lane lengths too: 3 x 256 and 3 x 8192 bytes, and their multiples.
        let lanes = [767, 768, 769, 775, 776, 1_536, 1_543, 16_384, 24_575, 24_576, 24_577, 24_576 + 768 + 9, 49_152, 65_536]
        data.withUnsafeBytes { raw in
            for start in 0..<9 {
                for length in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1_000] + lanes {
                    let slice = UnsafeRawBufferPointer(rebasing: raw[start..<(start + length)])
                    #expect(CRC32C.update(0x1234_5678, slice) == CRC32C.updateSoftware(0x1234_5678, slice))
                }
            }
            var random = SeededRandom(seed: SeededRandom.seed(fallback: 0x0C3C_32C0))
            print("crc32cHardwareMatchesTables: seed \(random.seed)")
            for _ in 0..<200 {
                let start = Int(random.next() % 64)
                let length = Int(random.next() % UInt64(raw.count - start))
                let slice = UnsafeRawBufferPointer(rebasing: raw[start..<(start + length)])
                let crc = UInt32(truncatingIfNeeded: random.next())
                #expect(CRC32C.update(crc, slice) == CRC32C.updateSoftware(crc, slice), "start \(start), length \(length)")
            }
        }
        #expect(CRC32C.updateSoftware(0, UnsafeRawBufferPointer(start: nil, count: 0)) == 0)
    }

    @Test("file names and shard directories")
    func paths() {
        #expect(BodyFile.relativePath(0x1234) == "bodies/34/12/0000000000001234")
        #expect(BodyFile.tempRelativePath(255) == "tmp/00000000000000ff.tmp")
        #expect(BodyFile.id(fromFileName: "0000000000001234") == 0x1234)
        #expect(BodyFile.id(fromFileName: "00000000000000ff.tmp") == 255)
        #expect(BodyFile.id(fromFileName: "README") == nil)
        #expect(BodyFile.blockCount(length: 0) == 0)
        #expect(BodyFile.blockCount(length: 65_536) == 1)
        #expect(BodyFile.blockCount(length: 65_537) == 2)
    }

    @Test("ENOSPC while writing maps to diskFull")
    func enospcIsDiskFull() throws {
        let fd = open("/dev/full", O_WRONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        let bytes = [UInt8](repeating: 1, count: 4096)
        #expect(throws: CacheStoreError.diskFull(path: "/cache")) {
            try bytes.withUnsafeBytes { try BodyFile.writeAll(fd: fd, $0, path: "/dev/full", directory: "/cache") }
        }
    }

    @Test("a failed write leaves no temp file")
    func failedWriteCleansUp() throws {
        let dir = NSTemporaryDirectory() + "lacquer-body-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // The final path's parent is a regular file: the rename fails after the temp file was written.
        try Data("x".utf8).write(to: URL(fileURLWithPath: dir + "/blocker"))
        #expect(throws: CacheStoreError.self) {
            try BodyFile.write(
                ByteBuffer(bytes: [1, 2, 3]),
                tempPath: dir + "/body.tmp",
                finalPath: dir + "/blocker/body",
                directory: dir,
                sync: true
            )
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/body.tmp"))
        let checksums = try BodyFile.write(
            ByteBuffer(bytes: diskTestBytes(70_000, seed: 2)),
            tempPath: dir + "/body.tmp",
            finalPath: dir + "/sub/dir/body",
            directory: dir,
            sync: true
        )
        #expect(checksums.count == 2)
        #expect(!FileManager.default.fileExists(atPath: dir + "/body.tmp"))
        #expect(FileManager.default.fileExists(atPath: dir + "/sub/dir/body"))
    }

    @Test("header encoding round-trips and re-checks the response limits")
    func headerCodec() {
        let headers = HTTPHeaders([("Content-Type", "text/html"), ("X-Bin", "a\u{0}b,c"), ("X-Empty", "")])
        let decoded = HeaderCodec.decode(HeaderCodec.encode(headers))
        #expect(decoded.map { Array($0.map { [$0.name, $0.value] }) } == Array(headers.map { [$0.name, $0.value] }))
        #expect(HeaderCodec.decode([1, 2]) == nil)
        #expect(HeaderCodec.decode(HeaderCodec.encode(headers) + [0]) == nil)
        let tooMany = HTTPHeaders((0...100).map { ("X-\($0)", "v") })
        #expect(!HeaderCodec.withinLimits(tooMany))
        #expect(HeaderCodec.decode(HeaderCodec.encode(tooMany)) == nil)
        let tooLong = HTTPHeaders([("X-Long", String(repeating: "a", count: 9000))])
        #expect(!HeaderCodec.withinLimits(tooLong))
        #expect(HeaderCodec.decode(HeaderCodec.encode(tooLong)) == nil)
        for bad in [[1, 2], HeaderCodec.encode(headers) + [0], HeaderCodec.encode(tooMany), HeaderCodec.encode(tooLong)] {
            #expect(!bad.withUnsafeBytes(HeaderCodec.isValid))
        }
        #expect(HeaderCodec.encode(headers).withUnsafeBytes(HeaderCodec.isValid))
    }

    @Test("an object built from the index's encoded fields is the object built from the field list")
    func objectFromEncodedFields() {
        var random = SeededRandom(seed: SeededRandom.seed(fallback: 0x5E1D_F1E1))
        print("objectFromEncodedFields: seed \(random.seed)")
        // Names a delivery treats apart, in any case, among ordinary ones.
        let names = [
            "Via", "vIA", "Cache-Status", "X-Cache-Status", "x-cache-STATUS", "Content-Length", "Accept-Ranges",
            "ACCEPT-RANGES", "Content-Encoding", "content-encoding", "xkey", "Surrogate-Key", "Cache-Tag", "Date",
            "ETag", "Set-Cookie", "X-A", "Vib", "Content-Lengthx", "X-Cache-Statu",
        ]
        let values = ["", "gzip", "x-GZIP, br", "1.1 up", "a\r\nb", "nul\u{0}byte", "gzi", "Tue, 24 Nov 2026 20:00:00 GMT", "é ü"]
        for round in 0..<300 {
            var headers = HTTPHeaders()
            for _ in 0..<Int(random.next() % 9) {
                headers.add(name: names[Int(random.next() % UInt64(names.count))], value: values[Int(random.next() % UInt64(values.count))])
            }
            let status = [200, 200, 206, 404][Int(random.next() % 4)]
            let hidden: SurrogateKeyFields = random.next() % 2 == 0 ? .standard : .none
            let body = ByteBuffer(repeating: UInt8(round & 0xFF), count: [0, 5, 16 * 1024, 16 * 1024 + 1][Int(random.next() % 4)])
            let key = CacheKey(host: "example.test", target: "/o\(round)")
            let fromList = StoredObject(
                key: key, variant: "", varyNames: [], status: status, reason: "R\(round)", headers: headers, body: body,
                requestTime: 1, responseTime: 2, origin: 3, ttl: 60, grace: 5, keep: 6, mustRevalidate: true,
                hiddenFields: hidden, softPurged: false)
            let fromEncoded = HeaderCodec.encode(headers).withUnsafeBytes { encoded in
                StoredObject(
                    key: key, variant: "", varyNames: [], status: status, reason: "R\(round)", fields: .encoded(encoded),
                    body: body, requestTime: 1, responseTime: 2, origin: 3, ttl: 60, grace: 5, keep: 6,
                    mustRevalidate: true, hiddenFields: hidden, softPurged: false)
            }
            #expect(Array(fromEncoded.wire) == Array(fromList.wire), "round \(round): \(headers)")
            #expect(fromEncoded.plainEnd == fromList.plainEnd && fromEncoded.bodyEnd == fromList.bodyEnd)
            #expect(fromEncoded.plainDeliverable == fromList.plainDeliverable && fromEncoded.mentionsGzip == fromList.mentionsGzip)
            #expect(fromEncoded.body == fromList.body && fromEncoded.cost == fromList.cost)
            #expect(fromEncoded.surrogateKeys(.standard) == fromList.surrogateKeys(.standard))
            // Not to be kept (a disk hit the memory tier will not take): the body stays its own
            // buffer, everything a delivery reads is the same.
            let notKept = HeaderCodec.encode(headers).withUnsafeBytes { encoded in
                StoredObject(
                    key: key, variant: "", varyNames: [], status: status, reason: "R\(round)", fields: .encoded(encoded),
                    body: body, requestTime: 1, responseTime: 2, origin: 3, ttl: 60, grace: 5, keep: 6,
                    mustRevalidate: true, hiddenFields: hidden, softPurged: false, inlineBody: false)
            }
            // (Its dates are kept as text, not packed: it is written out once.)
            #expect(notKept.largeBody == body && notKept.bodyEnd == Int(notKept.plainEnd))
            var notKeptLines = ByteBuffer()
            var listLines = ByteBuffer()
            notKept.writePlainFields(into: &notKeptLines)
            fromList.writePlainFields(into: &listLines)
            #expect(notKeptLines == listLines && notKept.plainFieldsLength == fromList.plainFieldsLength)
            #expect(notKept.surrogateKeys(.standard) == fromList.surrogateKeys(.standard))
            #expect(notKept.body == fromList.body && notKept.headers == fromList.headers)
            #expect(notKept.reason == fromList.reason && notKept.key == fromList.key)
            // Kept objects' bytes come from ObjectMemory; one delivered once and dropped takes malloc's.
            #expect(fromList.wireInSlot && fromEncoded.wireInSlot && !notKept.wireInSlot)
        }
    }
}
