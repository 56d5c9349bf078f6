#!/usr/bin/env python3
"""Upload chaos: 12 clients POST bodies of 0 to 5 MB (Content-Length or chunked; over the 4 MiB
limit some), leave at random bytes (FIN or RST); an origin of its own answers the body's SHA-256
or cuts its answer. Complete answers must match the bytes sent; bodies over the limit must get
a readable 413 (the lingering close). Usage: uploads.py BIN SECONDS [SEED]"""
import hashlib, os, random, signal, socket, socketserver, subprocess, sys, tempfile, threading, time, shutil, struct
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Tally, threaded_server, wait_listening
BIN = sys.argv[1]; SECONDS = float(sys.argv[2]); SEED = int(sys.argv[3]) if len(sys.argv) > 3 else 1
rng0 = random.Random(SEED); print("seed", SEED)
class Origin(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request; buf = b""; rng = random.Random()
        while True:
            while b"\r\n\r\n" not in buf:
                try: d = s.recv(65536)
                except OSError: return
                if not d: return
                buf += d
            head, _, buf = buf.partition(b"\r\n\r\n")
            h = {l.split(b":")[0].strip().lower(): l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")[1:] if b":" in l}
            body = b""
            try:
                if b"content-length" in h:
                    n = int(h[b"content-length"])
                    while len(buf) < n:
                        d = s.recv(65536)
                        if not d: return
                        buf += d
                    body, buf = buf[:n], buf[n:]
                elif h.get(b"transfer-encoding", b"").lower() == b"chunked":
                    while True:
                        while b"\r\n" not in buf:
                            d = s.recv(65536)
                            if not d: return
                            buf += d
                        ln, _, buf = buf.partition(b"\r\n"); n = int(ln.split(b";")[0], 16)
                        while len(buf) < n + 2:
                            d = s.recv(65536)
                            if not d: return
                            buf += d
                        body += buf[:n]; buf = buf[n + 2:]
                        if n == 0: break
                if rng.random() < 0.1:
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"); return  # origin cuts its answer
                out = hashlib.sha256(body).hexdigest().encode()
                s.sendall(b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
            except OSError:
                return
OP, LP = 18000 + rng0.randrange(900), 19000 + rng0.randrange(900)
origin = threaded_server(OP, Origin)
W = tempfile.mkdtemp(prefix="post.")
lq = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{LP}", "--admin", "off", "--backend", f"http://127.0.0.1:{OP}", "--access-log", "off",
                       "--storage-dir", f"{W}/s", "--threads", "2", "--max-request-body", "4MiB"], stdout=open(f"{W}/l.log", "w"), stderr=subprocess.STDOUT)
wait_listening(LP)
tally = Tally()
stats, errors, note, fail = tally.stats, tally.errors, tally.note, tally.fail
def worker(i, stop):
    rng = random.Random(SEED * 31 + i)
    while time.time() < stop:
        body = rng.randbytes(rng.choice([0, 10, 5000, 100_000, 1_500_000, 5_000_000]))
        chunked = rng.random() < 0.3
        leave = rng.random() < 0.2
        try:
            s = socket.create_connection(("127.0.0.1", LP), timeout=15)
            if chunked:
                parts = []; j = 0
                while j < len(body):
                    k = rng.randrange(1, 70000); parts.append(b"%x\r\n" % len(body[j:j + k]) + body[j:j + k] + b"\r\n"); j += k
                wire = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(parts) + b"0\r\n\r\n"
            else:
                wire = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            if leave:
                cut = rng.randrange(len(wire))
                s.sendall(wire[:cut])
                if rng.random() < 0.5: s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close(); note("left"); continue
            s.sendall(wire)
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = s.recv(65536)
                if not d: break
                buf += d
            head, _, rest = buf.partition(b"\r\n\r\n")
            if not head: fail(f"no answer to a {len(body)} B {'chunked ' if chunked else ''}POST"); s.close(); continue
            st = int(head.split()[1])
            h = {l.split(b":")[0].strip().lower(): l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")[1:] if b":" in l}
            n = int(h.get(b"content-length", b"-1"))
            while n >= 0 and len(rest) < n:
                d = s.recv(65536)
                if not d: break
                rest += d
            if st == 200 and n == 64 and len(rest) >= 64:
                if rest[:64] != hashlib.sha256(body).hexdigest().encode(): fail(f"origin saw other bytes for {len(body)} B")
                note("200")
            elif st == 200:
                note("200 cut by origin")
            elif st == 413:
                if len(body) <= 4 << 20: fail(f"413 for {len(body)} B")
                note("413")
            else:
                note(f"{st}")
            s.close()
        except OSError as e:
            fail(f"{len(body)} B POST: {e}")
stop = time.time() + SECONDS
ts = [threading.Thread(target=worker, args=(i, stop)) for i in range(12)]
for t in ts: t.start()
for t in ts: t.join(90)
alive = lq.poll() is None
print("stats", stats, "alive", alive)
lq.send_signal(signal.SIGTERM); rc = lq.wait(30); print("exit", rc, "errors", len(errors), "seed", SEED)
shutil.rmtree(W, ignore_errors=True)
sys.exit(1 if errors or rc != 0 or not alive else 0)
