#!/usr/bin/env python3
"""HTTP/2 chaos (h2c prior knowledge and TLS h2): concurrent streams, ranges, streams reset at
random bytes, connections dropped mid-body, windows never opened, PURGE between; bodies checked.
Needs the h2 package (pip install h2). Usage: http2.py BIN SECONDS [SEED]; LQ_EXTRA="..." adds Lacquer options."""
import os, random, shutil, signal, socket, ssl, subprocess, sys, tempfile, threading, time
import h2.connection, h2.config, h2.events, h2.exceptions
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Tally, drain_and_check, wait_listening

BIN = sys.argv[1]; SECONDS = float(sys.argv[2]); SEED = int(sys.argv[3]) if len(sys.argv) > 3 else int(time.time())
print("seed", SEED, flush=True)
rng0 = random.Random(SEED)
W = tempfile.mkdtemp(prefix="h2chaos."); www = os.path.join(W, "www"); os.makedirs(www)
SIZES = [0, 300, 20000, 70000, 300000, 1500000, 3000000]
objs = {}
for i in range(21):
    data = rng0.randbytes(SIZES[i % len(SIZES)] + rng0.randrange(100))
    open(os.path.join(www, f"o{i}"), "wb").write(data); objs[f"o{i}"] = data
os.system(f"chmod -R 755 {W}")
subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{W}/k.pem", "-out", f"{W}/c.pem",
                "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"], capture_output=True, check=True)
OP, LP, TP, AP = (p + rng0.randrange(900) for p in (18000, 19000, 16000, 17000))
open(f"{W}/nginx.conf", "w").write(f"""user root; pid {W}/nginx.pid; error_log {W}/ng.err warn; worker_processes 1;
events {{ worker_connections 1024; }}
http {{ access_log off; default_type application/octet-stream;
  client_body_temp_path {W}/ct; proxy_temp_path {W}/pt; fastcgi_temp_path {W}/ft; uwsgi_temp_path {W}/ut; scgi_temp_path {W}/st;
  server {{ listen 127.0.0.1:{OP}; root {www}; location / {{ add_header Cache-Control "max-age=3600"; }} }} }}""")
ng = subprocess.Popen(["nginx", "-p", W, "-c", f"{W}/nginx.conf", "-g", "daemon off;"])
log = open(f"{W}/lacquer.log", "w")
lq = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{LP},h2c", "--listen-tls", f"127.0.0.1:{TP}", "--tls-cert", f"{W}/c.pem",
                       "--tls-key", f"{W}/k.pem", "--admin", f"127.0.0.1:{AP}", "--backend", f"http://127.0.0.1:{OP}", "--threads", "2",
                       "--log-level", "notice", "--access-log", "off", "--storage-dir", f"{W}/store", "--memory", "3MiB",
                       "--disk-size", "64MiB", "--drain-timeout", "5"] + os.environ.get("LQ_EXTRA", "").split(), stdout=log, stderr=subprocess.STDOUT)
wait_listening(TP)

tally = Tally()
stats, errors, note, fail = tally.stats, tally.errors, tally.note, tally.fail

def connect(tls):
    s = socket.create_connection(("127.0.0.1", TP if tls else LP), timeout=10)
    if tls:
        ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        s = ctx.wrap_socket(s, server_hostname="localhost")
        if s.selected_alpn_protocol() != "h2": raise OSError("no h2")
    return s

def session(rng):
    tls = rng.random() < 0.4
    s = connect(tls)
    c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    stall = rng.random() < 0.1  # never open windows: the server must not hang on us forever
    if not stall:
        c.increment_flow_control_window(1 << 24)
    s.sendall(c.data_to_send())
    streams = {}
    drop_at = rng.randrange(1, 2_000_000) if rng.random() < 0.15 else None
    got_total = 0
    for _ in range(rng.randrange(1, 12)):
        name = rng.choice(list(objs)); data = objs[name]; sid = c.get_next_available_stream_id()
        hdrs = [(":method", "GET"), (":path", f"/{name}"), (":scheme", "https" if tls else "http"), (":authority", "x")]
        exp = data
        if data and rng.random() < 0.3:
            a = rng.randrange(len(data)); b = rng.randrange(a, len(data)); hdrs.append(("range", f"bytes={a}-{b}")); exp = data[a:b + 1]
        c.send_headers(sid, hdrs, end_stream=True)
        streams[sid] = {"name": name, "exp": exp, "body": b"", "status": None, "reset_at": rng.randrange(0, len(data) + 1) if rng.random() < 0.2 else None, "done": False}
    s.sendall(c.data_to_send())
    t0 = time.time(); deadline = time.time() + (3 if stall else 30)
    while any(not v["done"] for v in streams.values()) and time.time() < deadline:
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        if not d:
            if not stall:
                open_ = [(k, v["name"], len(v["body"]), len(v["exp"]), v["status"]) for k, v in streams.items() if not v["done"]]
                resets = sum(1 for v in streams.values() if v["reset_at"] is not None)
                fail(f"connection closed with streams open ({'tls' if tls else 'h2c'}) after {time.time() - t0:.2f}s, {got_total} B, {len(streams)} streams, {resets} to reset, open {open_[:4]}")
            break
        got_total += len(d)
        if drop_at is not None and got_total >= drop_at:
            note("dropped connection"); s.close(); return
        try:
            events = c.receive_data(d)
        except h2.exceptions.ProtocolError as e:
            fail(f"protocol error from server: {e}"); break
        for ev in events:
            st = streams.get(getattr(ev, "stream_id", None))
            if isinstance(ev, h2.events.ResponseReceived):
                st["status"] = int(dict(ev.headers)[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                st["body"] += ev.data
                if not stall: c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if st["reset_at"] is not None and len(st["body"]) >= st["reset_at"] and not st["done"]:
                    try:
                        c.reset_stream(ev.stream_id); st["done"] = True; note("reset stream")
                    except h2.exceptions.StreamClosedError:
                        pass  # it ended in this same read
            elif isinstance(ev, h2.events.StreamEnded):
                st["done"] = True
                if st["status"] == 206 or st["status"] == 200:
                    want = st["exp"] if st["status"] == 206 else objs[st["name"]]
                    if st["body"] != want: fail(f"{st['name']} {st['status']} body differs {len(st['body'])}/{len(want)}")
                    note(f"stream {st['status']}")
                else:
                    fail(f"{st['name']} status {st['status']}")
            elif isinstance(ev, h2.events.StreamReset):
                if st and not st["done"]: fail(f"server reset stream of {st['name']} code {ev.error_code}")
                if st: st["done"] = True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                if not stall: fail(f"GOAWAY {ev.error_code}")
        try:
            s.sendall(c.data_to_send())
        except OSError:
            break
    if stall: note("stalled")
    if rng.random() < 0.5:
        try: c.close_connection(); s.sendall(c.data_to_send())
        except Exception: pass
    s.close()

def worker(i, stop):
    rng = random.Random(SEED * 100 + i)
    while time.time() < stop:
        try:
            session(rng)
            if rng.random() < 0.05:
                c = socket.create_connection(("127.0.0.1", LP), timeout=5)
                c.sendall(f"PURGE /{rng.choice(list(objs))} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()); c.recv(1000); c.close(); note("purge")
        except (OSError, ssl.SSLError) as e:
            fail(f"session: {type(e).__name__} {e}")

stop = time.time() + SECONDS
ts = [threading.Thread(target=worker, args=(i, stop)) for i in range(8)]
for t in ts: t.start()
for t in ts: t.join(120)
alive = lq.poll() is None
if not alive: fail(f"lacquer exited {lq.returncode}")
print("stats", dict(sorted(stats.items())))
try:
    import json, urllib.request
    st = json.load(urllib.request.urlopen(f"http://127.0.0.1:{AP}/stats", timeout=5))
    print("server", {k: v for k, v in st.get("counters", st).items() if "http2" in k or "error" in k or "closed" in k} if isinstance(st.get("counters", st), dict) else st)
except Exception as e:
    print("stats failed", e)
drain_and_check(lq, f"{W}/lacquer.log", fail)
ng.terminate(); ng.wait()
print("errors", len(errors), "seed", SEED)
if errors: print("kept", W)
else: shutil.rmtree(W)
sys.exit(1 if errors else 0)
