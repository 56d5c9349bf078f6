#!/usr/bin/env python3
"""Drain under load: 24 downloads (whole and ranges, 200 KB to 5 MB, readers at 0.3 to 5 MB/s) from a
rate-limited origin; SIGTERM one second in. New connections must be refused, every download must
end with the exact bytes, and Lacquer must exit 0. Usage: drain.py BIN [SEED] [extra lacquer args...]"""
import os, random, signal, socket, subprocess, sys, tempfile, threading, time, shutil
BIN = sys.argv[1]; SEED = int(sys.argv[2]) if len(sys.argv) > 2 else 1
rng0 = random.Random(SEED); print("seed", SEED)
W = tempfile.mkdtemp(prefix="drain."); www = f"{W}/www"; os.makedirs(www)
objs = {f"o{i}": rng0.randbytes(s) for i, s in enumerate([3_000_000, 800_000, 200_000, 5_000_000])}
for n, d in objs.items(): open(f"{www}/{n}", "wb").write(d)
os.system(f"chmod -R 755 {W}")
OP, LP = 18000 + rng0.randrange(900), 19000 + rng0.randrange(900)
open(f"{W}/ng.conf", "w").write(f"""user root; pid {W}/ng.pid; error_log {W}/ng.err warn; worker_processes 1; events {{ worker_connections 256; }}
http {{ access_log off; client_body_temp_path {W}/ct; proxy_temp_path {W}/pt; fastcgi_temp_path {W}/ft; uwsgi_temp_path {W}/ut; scgi_temp_path {W}/st;
 server {{ listen 127.0.0.1:{OP}; root {www}; location / {{ add_header Cache-Control "max-age=3600"; limit_rate 2m; }} }} }}""")
ng = subprocess.Popen(["nginx", "-p", W, "-c", f"{W}/ng.conf", "-g", "daemon off;"])
lq = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{LP}", "--admin", "off", "--backend", f"http://127.0.0.1:{OP}", "--access-log", "off",
                       "--storage-dir", f"{W}/s", "--drain-timeout", "30"] + sys.argv[3:], stdout=open(f"{W}/l.log", "w"), stderr=subprocess.STDOUT)
time.sleep(1.5)
res = {}
failed = False
def dl(i):
    rng = random.Random(SEED * 10 + i); name = rng.choice(list(objs))
    s = socket.create_connection(("127.0.0.1", LP), timeout=40)
    rh = ""
    if rng.random() < 0.3:
        a = rng.randrange(len(objs[name]) // 2); rh = f"Range: bytes={a}-\r\n"
    s.sendall(f"GET /{name} HTTP/1.1\r\nHost: x\r\n{rh}\r\n".encode())
    buf = b""; rate = rng.choice([300_000, 1_000_000, 5_000_000]); t0 = time.time()
    while True:
        try: d = s.recv(65536)
        except OSError as e: res[i] = ("error", str(e)); return
        if not d: break
        buf += d
        body_so_far = len(buf)
        want_t = body_so_far / rate
        if want_t > time.time() - t0: time.sleep(min(0.2, want_t - (time.time() - t0)))
    head, _, body = buf.partition(b"\r\n\r\n")
    hl = head.decode().split("\r\n"); st = int(hl[0].split()[1]); h = {l.split(":")[0].lower(): l.split(":", 1)[1].strip() for l in hl[1:]}
    exp = objs[name]
    if st == 206: a = int(h["content-range"].split()[1].split("-")[0]); exp = exp[a:]
    res[i] = ("ok" if body == exp and h.get("connection", "").lower() == "close" or body == exp else "bad", st, len(body), len(exp), h.get("x-cache-status"))
ts = [threading.Thread(target=dl, args=(i,)) for i in range(24)]
for t in ts: t.start(); time.sleep(0.02)
time.sleep(1.0)
lq.send_signal(signal.SIGTERM); t_term = time.time()
time.sleep(0.3)
try:
    socket.create_connection(("127.0.0.1", LP), timeout=1).close(); print("FAIL new connection accepted during drain"); failed = True
except OSError: print("new connections refused during drain")
for t in ts: t.join(60)
rc = lq.wait(40); print("exit", rc, "after", round(time.time() - t_term, 1), "s")
bad = {k: v for k, v in res.items() if v[0] != "ok"}
print("downloads", len(res), "bad", bad)
failed = failed or bool(bad) or rc != 0 or len(res) != 24
ng.terminate(); ng.wait(); shutil.rmtree(W, ignore_errors=True)
sys.exit(1 if failed else 0)
