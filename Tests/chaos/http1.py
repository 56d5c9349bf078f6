#!/usr/bin/env python3
"""HTTP/1.1 chaos: 16 clients send random GETs, ranges (one, several, suffix, open-ended), HEADs,
pipelined pairs and conditional requests, leave at random bytes of a request or a response (FIN or
RST), PURGE, while the admin adds bans and SIGHUP reloads; every complete body is checked against
the origin's file. Then: purge a third of the objects, change them at the origin, restart, and
check purged objects come back new and the rest are still hits from disk.
Usage: http1.py BIN SECONDS [SEED]; TLS=1 for the TLS listener; LQ_EXTRA="..." adds Lacquer options."""
import hashlib, os, random, re, shutil, signal, socket, struct, subprocess, sys, tempfile, threading, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Tally, drain_and_check, wait_listening

BIN = sys.argv[1]
SECONDS = float(sys.argv[2])
SEED = int(sys.argv[3]) if len(sys.argv) > 3 else int(time.time())
print("seed", SEED, flush=True)
rng0 = random.Random(SEED)

W = tempfile.mkdtemp(prefix="chaos.")
www = os.path.join(W, "www"); os.makedirs(www)
os.chmod(W, 0o755)
SIZES = [0, 200, 1500, 16384, 70000, 200000, 1200000, 3000000]
objs = {}
for i in range(40):
    size = SIZES[i % len(SIZES)] + rng0.randrange(0, 100)
    data = rng0.randbytes(size)
    name = f"o{i}"
    with open(os.path.join(www, name), "wb") as f:
        f.write(data)
    objs[name] = data
os.system(f"chmod -R 755 {W}")
OP = 18000 + rng0.randrange(900)
LP = 19000 + rng0.randrange(900)
AP = 17000 + rng0.randrange(900)
conf = f"""user root; pid {W}/nginx.pid; error_log {W}/ng.err warn; worker_processes 1;
events {{ worker_connections 1024; }}
http {{ access_log off; default_type application/octet-stream; etag on;
  client_body_temp_path {W}/ct; proxy_temp_path {W}/pt; fastcgi_temp_path {W}/ft; uwsgi_temp_path {W}/ut; scgi_temp_path {W}/st;
  server {{ listen 127.0.0.1:{OP}; root {www}; location / {{ add_header Cache-Control "max-age=3600"; }} }} }}"""
open(os.path.join(W, "nginx.conf"), "w").write(conf)
ng = subprocess.Popen(["nginx", "-p", W, "-c", os.path.join(W, "nginx.conf"), "-g", "daemon off;"])

TLS = os.environ.get("TLS") == "1"
import ssl
if TLS:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{W}/k.pem", "-out", f"{W}/c.pem",
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"], capture_output=True, check=True)
    CTX = ssl.create_default_context(); CTX.check_hostname = False; CTX.verify_mode = ssl.CERT_NONE
def conn(timeout=10):
    c = socket.create_connection(("127.0.0.1", LP), timeout=timeout)
    return CTX.wrap_socket(c, server_hostname="localhost") if TLS else c
def start_lacquer(tag):
    log = open(os.path.join(W, f"lacquer-{tag}.log"), "w")
    listen = ["--listen-tls", f"127.0.0.1:{LP}", "--tls-cert", f"{W}/c.pem", "--tls-key", f"{W}/k.pem"] if TLS else ["--listen", f"127.0.0.1:{LP}"]
    p = subprocess.Popen([BIN] + listen + [ "--admin", f"127.0.0.1:{AP}", "--backend", f"http://127.0.0.1:{OP}",
                          "--threads", "2", "--log-level", "notice", "--access-log", "off", "--storage-dir", os.path.join(W, "store"),
                          "--memory", "3MiB", "--disk-size", "64MiB", "--drain-timeout", "5"] + os.environ.get("LQ_EXTRA", "").split(), stdout=log, stderr=subprocess.STDOUT)
    if not wait_listening(LP):
        raise SystemExit("lacquer did not listen")
    return p

def read_response(s, head_only=False, limit=None):
    """Reads one response; returns (status, headers dict (lowercase), body) or raises."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise EOFError("closed before head")
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if head_only or status in (204, 304):
        return status, hdrs, b"", rest
    if "content-length" in hdrs:
        n = int(hdrs["content-length"])
        while len(rest) < n:
            d = s.recv(min(1 << 20, n - len(rest)))
            if not d:
                raise EOFError(f"closed after {len(rest)} of {n} body bytes")
            rest += d
        return status, hdrs, rest[:n], rest[n:]
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                d = s.recv(65536)
                if not d: raise EOFError("closed in chunk size")
                rest += d
            line, _, rest = rest.partition(b"\r\n")
            n = int(line.split(b";")[0], 16)
            while len(rest) < n + 2:
                d = s.recv(65536)
                if not d: raise EOFError("closed in chunk")
                rest += d
            body += rest[:n]; rest = rest[n + 2:]
            if n == 0:
                return status, hdrs, body, rest
    body = rest
    while True:
        d = s.recv(65536)
        if not d: break
        body += d
    return status, hdrs, body, b""

tally = Tally()
stats, errors, note, fail = tally.stats, tally.errors, tally.note, tally.fail

def check_multipart(hdrs, body, data, ranges):
    m = re.search(r'boundary=("?)([^";]+)\1', hdrs.get("content-type", ""))
    if not m: return "no boundary"
    b = m.group(2).encode()
    parts = body.split(b"--" + b)
    got = []
    for part in parts[1:]:
        if part.startswith(b"--"): break
        h, _, content = part.partition(b"\r\n\r\n")
        cr = re.search(rb"[Cc]ontent-[Rr]ange: bytes (\d+)-(\d+)/(\d+)", h)
        if not cr: return "part without Content-Range"
        s0, e0 = int(cr.group(1)), int(cr.group(2))
        content = content[:-2] if content.endswith(b"\r\n") else content
        if content != data[s0:e0 + 1]: return f"part {s0}-{e0} differs"
        got.append((s0, e0))
    if not got: return "no parts"
    return None

def worker(idx, stop_at):
    rng = random.Random(SEED * 1000 + idx)
    s = None
    prev = []; used = 0; last_t = time.time()
    while time.time() < stop_at:
        name = rng.choice(list(objs)); data = objs[name]; size = len(data)
        act = rng.choices(["get", "range", "multi", "head", "leave", "rst", "purge", "pipe", "ims"], [30, 15, 6, 6, 12, 6, 3, 6, 4])[0]
        try:
            if s is None or rng.random() < 0.1 or time.time() - last_t > 4.0:  # the server ends keep-alive after 5 s idle
                if s: s.close()
                s = conn()
                prev = []; used = 0
            path = f"/{name}"
            if act in ("get", "range", "multi", "head", "pipe", "ims"):
                prev.append((act, name, round(time.time() - last_t, 3))); used += 1; last_t = time.time()
            if act == "get":
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                st, h, body, rest = read_response(s)
                if st != 200 or body != data: fail(f"{act} {name} status {st} len {len(body)}/{size} cache {h.get('x-cache-status')}")
                note(f"get {h.get('x-cache-status')}")
            elif act == "range":
                if size == 0: continue
                a = rng.randrange(size); b = rng.randrange(a, size)
                kind = rng.random()
                rh = f"bytes={a}-{b}" if kind < 0.6 else (f"bytes=-{b - a + 1}" if kind < 0.8 else f"bytes={a}-")
                exp = data[a:b + 1] if kind < 0.6 else (data[size - (b - a + 1):] if kind < 0.8 else data[a:])
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nRange: {rh}\r\n\r\n".encode())
                st, h, body, rest = read_response(s)
                if st == 206:
                    if body != exp: fail(f"range {name} {rh} body differs ({len(body)} vs {len(exp)}) cache {h.get('x-cache-status')}")
                elif st == 200:
                    if body != data: fail(f"range {name} {rh} 200 body differs")
                else:
                    fail(f"range {name} {rh} status {st}")
                note(f"range {st}")
            elif act == "multi":
                if size < 10: continue
                rs = sorted(set((lambda a: (a, min(size - 1, a + rng.randrange(1, 5000))))(rng.randrange(size)) for _ in range(rng.randrange(2, 5))))
                rh = "bytes=" + ",".join(f"{a}-{b}" for a, b in rs)
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nRange: {rh}\r\n\r\n".encode())
                st, h, body, rest = read_response(s)
                if st == 206:
                    if h.get("content-type", "").startswith("multipart/byteranges"):
                        why = check_multipart(h, body, data, rs)
                        if why: fail(f"multi {name} {rh}: {why}")
                    else:
                        cr = re.match(r"bytes (\d+)-(\d+)/", h.get("content-range", ""))
                        if not cr or body != data[int(cr.group(1)):int(cr.group(2)) + 1]: fail(f"multi {name} {rh} single part differs")
                elif st == 200:
                    if body != data: fail(f"multi {name} 200 differs")
                else:
                    fail(f"multi {name} status {st}")
                note(f"multi {st} {h.get('x-cache-status')}")
            elif act == "head":
                s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                st, h, body, rest = read_response(s, head_only=True)
                if st != 200 or int(h.get("content-length", -1)) != size: fail(f"head {name} {st} cl {h.get('content-length')} size {size}")
                note("head")
            elif act in ("leave", "rst"):
                c = conn()
                req = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                cut = rng.randrange(len(req) + 1) if rng.random() < 0.2 else len(req)
                c.sendall(req[:cut])
                want = rng.randrange(0, size + 400)
                got = 0
                while got < want and cut == len(req):
                    d = c.recv(min(65536, want - got))
                    if not d: break
                    got += len(d)
                if act == "rst":
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.close()
                note(act)
            elif act == "purge":
                c = conn()
                c.sendall(f"PURGE {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                st, h, body, rest = read_response(c)
                if st not in (200, 204, 404): fail(f"purge {name} status {st}")
                c.close()
                note(f"purge {st}")
            elif act == "pipe":
                other = rng.choice(list(objs))
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\nGET /{other} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                st, h, body, rest = read_response(s)
                if st != 200 or body != data: fail(f"pipe1 {name} {st} {len(body)}/{size}")
                # the second response may already be partly read into rest
                class Pre:
                    def __init__(self, pre, sock): self.pre, self.sock = pre, sock
                    def recv(self, n):
                        if self.pre:
                            d, self.pre = self.pre[:n], self.pre[n:]
                            return d
                        return self.sock.recv(n)
                st2, h2, body2, _ = read_response(Pre(rest, s))
                if st2 != 200 or body2 != objs[other]: fail(f"pipe2 {other} {st2} {len(body2)}/{len(objs[other])}")
                note("pipe")
            elif act == "ims":
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                st, h, body, rest = read_response(s)
                if st != 200 or body != data: fail(f"ims-get {name} {st}")
                etag = h.get("etag")
                if etag:
                    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n".encode())
                    st, h, body, rest = read_response(s)
                    if st not in (304, 200) or (st == 200 and body != data): fail(f"ims {name} {st}")
                    note(f"ims {st}")
            if act in ("get", "range", "multi", "head", "pipe", "ims") and s is not None:
                last = h2 if act == "pipe" else h
                if last.get("connection", "").lower() == "close":
                    note("server closed"); s.close(); s = None
        except (OSError, EOFError, ValueError) as e:
            if act not in ("leave", "rst"):
                fail(f"{act} {name}: {type(e).__name__} {e}; used {used}; before {prev[-4:]}")
            if s: s.close()
            s = None
    if s: s.close()

def admin(method, path, body=""):
    c = socket.create_connection(("127.0.0.1", AP), timeout=10)
    c.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode())
    st, h, body, _ = read_response(c); c.close()
    return st, body

lq = start_lacquer("1")
stop_at = time.time() + SECONDS
threads = [threading.Thread(target=worker, args=(i, stop_at)) for i in range(16)]
for t in threads: t.start()
while time.time() < stop_at:
    time.sleep(rng0.uniform(1, 4))
    r = rng0.random()
    if r < 0.4:
        lq.send_signal(signal.SIGHUP); note("sighup")
    elif r < 0.7:
        try:
            st, _ = admin("POST", "/ban", f"req.url ~ ^/{rng0.choice(list(objs))}$"); note(f"ban {st}")
        except Exception as e:
            fail(f"admin ban: {e}")
    if lq.poll() is not None:
        fail(f"lacquer exited with {lq.returncode} during the run"); break
for t in threads: t.join(60)
print("stats", dict(sorted(stats.items())), flush=True)
try:
    st, body = admin("GET", "/stats")
    print("admin /stats", st, len(body))
except Exception as e:
    fail(f"stats: {e}")
if lq.poll() is not None:
    fail(f"lacquer exited with {lq.returncode}")

# Quiet phase: every object once (so it is stored), purge a third, change those at the origin,
# restart, and check: purged ones are the new bytes, the others are still served (same bytes).
names = list(objs)
for n in names:
    c = conn()
    c.sendall(f"GET /{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode()); read_response(c); c.close()
time.sleep(2.5)  # the disk writer
purged = rng0.sample(names, len(names) // 3)
for n in purged:
    c = conn()
    c.sendall(f"PURGE /{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode()); st, _, _, _ = read_response(c); c.close()
    if st not in (200, 204): fail(f"quiet purge {n} {st}")
for n in purged:
    objs[n] = rng0.randbytes(len(objs[n]))
    with open(os.path.join(www, n), "wb") as f: f.write(objs[n])
drain_and_check(lq, os.path.join(W, "lacquer-1.log"), fail)
lq = start_lacquer("2")
hits = 0
for n in names:
    c = conn()
    c.sendall(f"GET /{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode()); st, h, body, _ = read_response(c); c.close()
    if body != objs[n]: fail(f"after restart {n} ({'purged' if n in purged else 'kept'}) differs, cache {h.get('x-cache-status')}")
    if n not in purged and h.get("x-cache-status") == "HIT": hits += 1
print(f"after restart: {hits} of {len(names) - len(purged)} kept objects were hits", flush=True)
drain_and_check(lq, os.path.join(W, "lacquer-2.log"), fail)
ng.terminate(); ng.wait()
print("errors", len(errors), "seed", SEED)
if errors:
    print("kept", W)
else:
    shutil.rmtree(W)
sys.exit(1 if errors else 0)
