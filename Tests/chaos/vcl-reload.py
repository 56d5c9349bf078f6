#!/usr/bin/env python3
"""VCL reloads under load: 8 clients fetch while the --config file is rewritten every 0.05-0.5 s to
one of three good configurations (X-Conf A, B or C) or a broken one, and reloaded by SIGHUP or
POST /reload. Every answer must carry A, B or C; after each reload a new request must show the
new configuration, or the old one when the new file is broken. Usage: vcl-reload.py BIN SECONDS [SEED]"""
import os, random, signal, socket, subprocess, sys, tempfile, threading, time, shutil
BIN = sys.argv[1]; SECONDS = float(sys.argv[2]); SEED = int(sys.argv[3]) if len(sys.argv) > 3 else 1
rng = random.Random(SEED); print("seed", SEED)
W = tempfile.mkdtemp(prefix="vcl."); www = f"{W}/www"; os.makedirs(www)
for i in range(10): open(f"{www}/o{i}", "wb").write(os.urandom(1000 * i))
os.system(f"chmod -R 755 {W}")
OP, LP, AP = 18000 + rng.randrange(900), 19000 + rng.randrange(900), 17000 + rng.randrange(900)
open(f"{W}/ng.conf", "w").write(f"""user root; pid {W}/ng.pid; error_log {W}/ng.err warn; worker_processes 1; events {{ worker_connections 256; }}
http {{ access_log off; client_body_temp_path {W}/ct; proxy_temp_path {W}/pt; fastcgi_temp_path {W}/ft; uwsgi_temp_path {W}/ut; scgi_temp_path {W}/st;
 server {{ listen 127.0.0.1:{OP}; root {www}; location / {{ add_header Cache-Control "max-age=3600"; }} }} }}""")
ng = subprocess.Popen(["nginx", "-p", W, "-c", f"{W}/ng.conf", "-g", "daemon off;"])
def good(tag): return f'vcl 4.1;\nbackend default {{ .host = "127.0.0.1"; .port = "{OP}"; }}\nsub vcl_recv {{ if (req.url ~ "^/o[0-4]") {{ set req.http.X-Half = "low"; }} }}\nsub vcl_deliver {{ set resp.http.X-Conf = "{tag}"; }}\n'
BAD = ['vcl 4.1;\nsub vcl_recv { set req.http.x = ; }\n', 'vcl 4.1;\nbackend default { .host = "127.0.0.1"; .port = "1"; }\nsub vcl_deliver { set resp.http.X = regsub(req.url, "(", "x"); }\n', 'not vcl at all', '']
cfg = f"{W}/site.vcl"; open(cfg, "w").write(good("A"))
lq = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{LP}", "--admin", f"127.0.0.1:{AP}", "--config", cfg, "--access-log", "off", "--storage-dir", f"{W}/s",
                       "--threads", "2"], stdout=open(f"{W}/l.log", "w"), stderr=subprocess.STDOUT)
time.sleep(1.5)
current = ["A"]; errors = []; seen = {}; lock = threading.Lock()
def client(i, stop):
    r = random.Random(SEED + i); s = None
    while time.time() < stop:
        try:
            if s is None: s = socket.create_connection(("127.0.0.1", LP), timeout=10)
            s.sendall(f"GET /o{r.randrange(10)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = s.recv(65536)
                if not d: raise OSError("closed")
                buf += d
            head, _, rest = buf.partition(b"\r\n\r\n")
            h = {l.split(b":")[0].lower(): l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")[1:] if b":" in l}
            n = int(h[b"content-length"])
            while len(rest) < n:
                d = s.recv(65536)
                if not d: raise OSError("closed mid-body")
                rest += d
            tag = h.get(b"x-conf", b"-").decode()
            with lock: seen[tag] = seen.get(tag, 0) + 1
            if tag not in ("A", "B", "C"): errors.append(f"X-Conf {tag!r}")
            if h.get(b"connection", b"").lower() == b"close": s.close(); s = None
        except OSError as e:
            errors.append(f"client: {e}"); s = None
stop = time.time() + SECONDS
ts = [threading.Thread(target=client, args=(i, stop)) for i in range(8)]
for t in ts: t.start()
reloads = {"good": 0, "bad": 0}
while time.time() < stop - 1:
    time.sleep(rng.uniform(0.05, 0.5))
    if rng.random() < 0.5:
        tag = rng.choice("ABC"); open(cfg, "w").write(good(tag)); want = tag; reloads["good"] += 1
    else:
        open(cfg, "w").write(rng.choice(BAD)); want = current[0]; reloads["bad"] += 1
    if rng.random() < 0.5: lq.send_signal(signal.SIGHUP)
    else:
        c = socket.create_connection(("127.0.0.1", AP), timeout=10); c.sendall(b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"); c.recv(4096); c.close()
    time.sleep(0.3)
    # after the reload, a fresh request must show `want`
    c = socket.create_connection(("127.0.0.1", LP), timeout=10); c.sendall(b"GET /o1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    got = b""
    while True:
        d = c.recv(65536)
        if not d: break
        got += d
    c.close()
    tag = next((l.split(b":", 1)[1].strip().decode() for l in got.split(b"\r\n\r\n")[0].split(b"\r\n") if l.lower().startswith(b"x-conf:")), "-")
    if tag != want: errors.append(f"after reload wanted {want}, got {tag}")
    current[0] = want
for t in ts: t.join(30)
alive = lq.poll() is None
print("seed", SEED, "seen", seen, "reloads", reloads, "alive", alive, "errors", len(errors), errors[:5])
lq.send_signal(signal.SIGTERM); print("exit", lq.wait(30))
ng.terminate(); ng.wait(); shutil.rmtree(W, ignore_errors=True)
sys.exit(1 if errors or not alive else 0)
