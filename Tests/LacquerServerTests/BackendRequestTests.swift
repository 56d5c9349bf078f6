import NIOHTTP1
import Testing

@testable import LacquerServer

@Suite("BackendRequest")
struct BackendRequestTests {
    private func fill(acceptEncoding: [String]) -> HTTPHeaders {
        var headers = HTTPHeaders([("Host", "example.test")])
        for value in acceptEncoding { headers.add(name: "Accept-Encoding", value: value) }
        let client = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/o", headers: headers)
        return BackendRequest.make(
            client: client, method: .GET, isFill: true, bodyFraming: nil, clientAddress: "192.0.2.1", xid: 7,
            viaName: "lacquer"
        ).headers
    }

    @Test("a fill asks the origin for gzip exactly when the client takes gzip (RFC 9110 §12.5.3), else for no coding")
    func fillAcceptEncoding() {
        let cases: [([String], Bool)] = [
            ([], false), (["gzip"], true), (["GZIP, br"], true), (["x-gzip"], true), (["br", "gzip;q=0.5"], true),
            (["gzip;q=0"], false), (["*"], true), (["*;q=0"], false), (["gzip;q=0, *"], false), (["br, deflate"], false),
            (["identity"], false), (["notgzip"], false),
        ]
        for (values, gzip) in cases {
            let sent = self.fill(acceptEncoding: values)
            #expect(sent["accept-encoding"] == (gzip ? ["gzip"] : []), "Accept-Encoding \(values)")
        }
    }
}
