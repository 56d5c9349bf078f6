#!/usr/bin/env python3
"""Input fuzz: mutated HTTP/1.1 requests (pipelined, chunked, ranges, PURGE, HTTP/1.0), an h2c
preface, PROXY v1/v2 headers on a ,proxy listener and admin requests behind --admin-secret, sent
whole or a few bytes at a time by 6 threads. Lacquer must answer HTTP or close, never 500, never
die, and still serve afterwards. Usage: fuzz.py BIN SECONDS [SEED]"""
import os, random, signal, socket, subprocess, sys, tempfile, threading, time, shutil
BIN = sys.argv[1]; SECONDS = float(sys.argv[2]); SEED = int(sys.argv[3]) if len(sys.argv) > 3 else 1
rng = random.Random(SEED); print("seed", SEED)
W = tempfile.mkdtemp(prefix="fuzz."); www = f"{W}/www"; os.makedirs(www)
for i in range(5): open(f"{www}/o{i}", "wb").write(os.urandom(100 + 50000 * i))
os.system(f"chmod -R 755 {W}")
OP, LP, AP, PP = 18000 + rng.randrange(900), 19000 + rng.randrange(900), 17000 + rng.randrange(900), 16000 + rng.randrange(900)
open(f"{W}/ng.conf", "w").write(f"""user root; pid {W}/ng.pid; error_log {W}/ng.err warn; worker_processes 1; events {{ worker_connections 256; }}
http {{ access_log off; client_body_temp_path {W}/ct; proxy_temp_path {W}/pt; fastcgi_temp_path {W}/ft; uwsgi_temp_path {W}/ut; scgi_temp_path {W}/st;
 server {{ listen 127.0.0.1:{OP}; root {www}; location / {{ add_header Cache-Control "max-age=3600"; }} }} }}""")
ng = subprocess.Popen(["nginx", "-p", W, "-c", f"{W}/ng.conf", "-g", "daemon off;"])
open(f"{W}/secret", "w").write("s3cret\n")
lq = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{LP},h2c", "--listen", f"127.0.0.1:{PP},proxy", "--admin", f"127.0.0.1:{AP}", "--admin-secret", f"{W}/secret",
                       "--backend", f"http://127.0.0.1:{OP}", "--access-log", f"{W}/access.log", "--storage-dir", f"{W}/s", "--threads", "2"],
                      stdout=open(f"{W}/l.log", "w"), stderr=subprocess.STDOUT)
time.sleep(1.5)
SEEDS = [
    b"GET /o1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /o2 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-10,20-30\r\nIf-None-Match: \"a\"\r\n\r\n",
    b"POST /o1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"PURGE /o3 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /o0 HTTP/1.0\r\n\r\n",
    b"GET /o4 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nCache-Control: no-cache\r\n\r\nGET /o1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
]
ADMIN = [b"GET /stats HTTP/1.1\r\nHost: a\r\n\r\n", b"POST /ban HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\nContent-Length: 20\r\n\r\nreq.url ~ ^/o1$ && x",
         b"POST /purge?key=/o1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\nContent-Length: 0\r\n\r\n", b"GET /log HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer wrong\r\n\r\n",
         b"GET /bans HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\n\r\n", b"POST /reload HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\nContent-Length: 0\r\n\r\n"]
PROXY = [b"PROXY TCP4 1.2.3.4 5.6.7.8 111 222\r\nGET /o1 HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\x01\x02\x03\x04\x05\x06\x07\x08\x00\x6f\x00\xde" + b"GET /o1 HTTP/1.1\r\nHost: x\r\n\r\n"]
TOKENS = [b"\r\n", b"\n", b"\r", b" ", b":", b"\x00", b"\xff", b"%", b"%00", b"/../", b"Content-Length: 5", b"Content-Length: -1", b"Transfer-Encoding: chunked",
          b"Host: y", b"ffffffffffffffff\r\n", b"HTTP/1.1", b"HTTP/9.9", b"Connection: close, content-length", b"Expect: 100-continue", b"Range: bytes=-0", b"Range: bytes=99999999999999999999-",
          b"\t", b"A" * 9000, b"x:" * 200, b"If-Modified-Since: garbage", b"Upgrade: h2c", b"GET", b"*", b"?" * 10]
def mutate(b):
    b = bytearray(b)
    for _ in range(rng.randrange(1, 6)):
        op = rng.random(); pos = rng.randrange(len(b) + 1)
        if op < 0.3 and b: b[rng.randrange(len(b))] = rng.randrange(256)
        elif op < 0.5 and b: del b[pos:pos + rng.randrange(1, 20)]
        elif op < 0.8: b[pos:pos] = rng.choice(TOKENS)
        elif b: b[pos:pos] = b[rng.randrange(len(b)):][:rng.randrange(1, 40)]
    return bytes(b)
counts = {"sent": 0, "answered": 0, "closed": 0, "timeout": 0}
stop = time.time() + SECONDS
def loop(idx):
  while time.time() < stop:
    one()
def one():
    kind = rng.random()
    port, base = (AP, rng.choice(ADMIN)) if kind < 0.15 else ((PP, rng.choice(PROXY)) if kind < 0.3 else (LP, rng.choice(SEEDS)))
    data = mutate(base) if rng.random() < 0.9 else base
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=0.3)
        step = rng.choice([len(data) or 1, 1, 7, 100])  # whole, or in small writes
        for i in range(0, len(data), step):
            c.sendall(data[i:i + step])
        counts["sent"] += 1
        c.shutdown(socket.SHUT_WR) if rng.random() < 0.5 else None
        got = b""
        while len(got) < 1 << 20:
            d = c.recv(65536)
            if not d: break
            got += d
        counts["answered" if got else "closed"] += 1
        if got and not (got.startswith(b"HTTP/1.") or got[3:4] in (b"\x04", b"\x07", b"\x01", b"\x00")):
            print("odd answer", repr(data[:80]), repr(got[:80]))
        if b" 500 " in got[:20]: print("500 for", repr(data[:200]))
        c.close()
    except socket.timeout:
        counts["timeout"] += 1
    except OSError:
        counts["closed"] += 1
    if lq.poll() is not None:
        print("LACQUER DIED", lq.returncode, "on", repr(data[:300])); time.sleep(100)
ts = [threading.Thread(target=loop, args=(i,)) for i in range(6)]
for t in ts: t.start()
for t in ts: t.join()
alive = lq.poll() is None
c = socket.create_connection(("127.0.0.1", LP), timeout=5); c.sendall(b"GET /o1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); ok = c.recv(100).startswith(b"HTTP/1.1 200"); c.close()
print("seed", SEED, counts, "alive", alive, "serves after", ok)
lq.send_signal(signal.SIGTERM); print("exit", lq.wait(30))
log = open(f"{W}/l.log").read()
for pat in ("Fatal", "precondition", "Crash"):
    if pat in log: print("LOG", pat)
ng.terminate(); ng.wait(); shutil.rmtree(W, ignore_errors=True)
sys.exit(0 if alive and ok else 1)
