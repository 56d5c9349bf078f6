#!/usr/bin/env python3
"""Origin chaos: an origin that cuts bodies at random bytes, answers 503, stalls, sends chunked,
closes keep-alive connections without a word after an answer,
with short TTLs so objects expire and are refetched while clients wait together (coalescing).
A client's complete response must be the true bytes; a cut one a prefix of them.
Usage: origin.py BIN SECONDS [SEED] [extra lacquer args...]; ORIGIN_TLS=1 for an HTTPS origin."""
import hashlib, os, random, signal, socket, subprocess, sys, tempfile, threading, time, shutil
import socketserver
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Tally, drain_and_check, threaded_server, wait_listening

BIN = sys.argv[1]; SECONDS = float(sys.argv[2]); SEED = int(sys.argv[3]) if len(sys.argv) > 3 else int(time.time())
EXTRA = sys.argv[4:]
print("seed", SEED, flush=True)
rng0 = random.Random(SEED)
SIZES = [0, 100, 5000, 70000, 300000, 1500000]
def content(name):
    n = SIZES[int(name[1:]) % len(SIZES)] + int(name[1:])
    return random.Random(name).randbytes(n)
NAMES = [f"o{i}" for i in range(24)]
BODIES = {n: content(n) for n in NAMES}
ostats = {}; olock = threading.Lock()
def onote(k):
    with olock: ostats[k] = ostats.get(k, 0) + 1

ORIGIN_TLS = os.environ.get("ORIGIN_TLS") == "1"
if ORIGIN_TLS:
    import ssl
    _certs = tempfile.mkdtemp(prefix="ochaos-cert.")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{_certs}/k.pem", "-out", f"{_certs}/c.pem",
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, check=True)
    SERVER_CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); SERVER_CTX.load_cert_chain(f"{_certs}/c.pem", f"{_certs}/k.pem")

class Origin(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        if ORIGIN_TLS:
            try:
                s = SERVER_CTX.wrap_socket(s, server_side=True)
            except (OSError, ssl.SSLError):
                return
        rng = random.Random()
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                try: d = s.recv(65536)
                except OSError: return
                if not d: return
                buf += d
            head, _, buf = buf.partition(b"\r\n\r\n")
            line = head.split(b"\r\n")[0].decode()
            path = line.split()[1].split("?")[0].lstrip("/")
            inm = None
            for l in head.split(b"\r\n")[1:]:
                if l.lower().startswith(b"if-none-match:"): inm = l.split(b":", 1)[1].strip().decode()
            body = BODIES.get(path)
            if body is None:
                s.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"); continue
            etag = '"' + hashlib.md5(body).hexdigest()[:16] + '"'
            cc = f"max-age={rng.choice([1, 2, 3])}"
            r = rng.random()
            try:
                if inm == etag and r < 0.8:
                    onote("304"); s.sendall(f"HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nCache-Control: {cc}\r\n\r\n".encode()); continue
                if r < 0.10:
                    onote("503"); s.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nCache-Control: no-store\r\n\r\nbusy"); continue
                if r < 0.25:
                    cut = rng.randrange(0, len(body) + 1) if body else 0
                    onote("cut")
                    s.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nETag: {etag}\r\nCache-Control: {cc}\r\n\r\n".encode() + body[:cut])
                    if rng.random() < 0.5: s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    return
                if r < 0.30:
                    onote("stall"); time.sleep(rng.uniform(0.5, 2))
                if r < 0.45:
                    onote("chunked")
                    out = [f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nETag: {etag}\r\nCache-Control: {cc}\r\n\r\n".encode()]
                    i = 0
                    while i < len(body):
                        k = rng.randrange(1, 40000); out.append(f"{min(k, len(body) - i):x}\r\n".encode() + body[i:i + k] + b"\r\n"); i += k
                    if rng.random() < 0.2:
                        onote("chunked-cut"); s.sendall(b"".join(out)[:rng.randrange(1, sum(map(len, out)) + 1)]); return
                    out.append(b"0\r\n\r\n"); s.sendall(b"".join(out)); continue
                onote("ok")
                s.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nETag: {etag}\r\nCache-Control: {cc}\r\n\r\n".encode() + body)
                if rng.random() < 0.15:
                    onote("keep-alive closed"); return  # a reused connection the origin has just closed
            except OSError:
                return

OP = 18000 + rng0.randrange(900); LP = 19000 + rng0.randrange(900); AP = 17000 + rng0.randrange(900)
origin = threaded_server(OP, Origin)
W = tempfile.mkdtemp(prefix="ochaos.")
log = open(f"{W}/lacquer.log", "w")
lq = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{LP}", "--admin", f"127.0.0.1:{AP}", "--backend", f"{'https' if ORIGIN_TLS else 'http'}://127.0.0.1:{OP}",
                       "--threads", "2", "--log-level", "notice", "--access-log", "off", "--storage-dir", f"{W}/store",
                       "--memory", "4MiB", "--disk-size", "64MiB", "--drain-timeout", "10"] + (["--backend-no-verify"] if ORIGIN_TLS else []) + EXTRA, stdout=log, stderr=subprocess.STDOUT)
wait_listening(LP)

tally = Tally()
stats, errors, note, fail = tally.stats, tally.errors, tally.note, tally.fail

def get(s, name, extra=""):
    s.sendall(f"GET /{name} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d: return None, {}, buf, False
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n"); st = int(lines[0].split()[1])
    h = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
    if "content-length" in h:
        n = int(h["content-length"])
        while len(rest) < n:
            d = s.recv(min(1 << 20, n - len(rest)))
            if not d: return st, h, rest, False
            rest += d
        return st, h, rest[:n], True
    if h.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                d = s.recv(65536)
                if not d: return st, h, body, False
                rest += d
            ln, _, rest = rest.partition(b"\r\n"); n = int(ln.split(b";")[0], 16)
            while len(rest) < n + 2:
                d = s.recv(65536)
                if not d: return st, h, body + rest[:n], False
                rest += d
            body += rest[:n]; rest = rest[n + 2:]
            if n == 0: return st, h, body, True
    return st, h, rest, True

def worker(i, stop):
    rng = random.Random(SEED * 77 + i)
    s = None; last = 0
    while time.time() < stop:
        name = rng.choice(NAMES); true = BODIES[name]
        try:
            if s is None or time.time() - last > 4:
                if s: s.close()
                s = socket.create_connection(("127.0.0.1", LP), timeout=15); used = 0
            used += 1; t0 = time.time()
            extra = f"Range: bytes={rng.randrange(max(1, len(true)))}-\r\n" if true and rng.random() < 0.15 else ""
            last_before = last
            st, h, body, complete = get(s, name, extra)
            last = time.time()
            if st is None:
                note("closed before head"); print("closed before head", name, "request", used, "on the connection, after", round(time.time() - t0, 3), "s, idle before", round(t0 - last_before, 3), repr(extra), flush=True); s.close(); s = None; continue
            if st == 200:
                if complete and body != true: fail(f"{name} complete 200 with wrong bytes ({len(body)}/{len(true)}) {h.get('x-cache-status')}")
                elif not complete and not true.startswith(body): fail(f"{name} cut 200 not a prefix")
                note(f"200 {'complete' if complete else 'cut'} {h.get('x-cache-status')}")
            elif st == 206:
                a = int(h["content-range"].split()[1].split("-")[0])
                if complete and body != true[a:a + len(body)]: fail(f"{name} 206 wrong bytes")
                note(f"206 {'complete' if complete else 'cut'}")
            elif st in (502, 503, 504):
                note(f"{st}")
            else:
                fail(f"{name} status {st}")
            if not complete or h.get("connection", "").lower() == "close":
                s.close(); s = None
            if rng.random() < 0.05 and s:
                s.close(); s = None
        except OSError as e:
            fail(f"{name}: {e}"); s = None

stop = time.time() + SECONDS
ts = [threading.Thread(target=worker, args=(i, stop)) for i in range(16)]
for t in ts: t.start()
for t in ts: t.join(120)
if lq.poll() is not None: fail(f"lacquer exited {lq.returncode}")
print("client", dict(sorted(stats.items())))
print("origin", dict(sorted(ostats.items())))
txt = drain_and_check(lq, f"{W}/lacquer.log", fail)
if "disk tier object dropped" in txt: fail("a disk read failure was reported (no file was damaged)")
print("errors", len(errors), "seed", SEED)
if errors: print("kept", W)
else: shutil.rmtree(W)
sys.exit(1 if errors else 0)
