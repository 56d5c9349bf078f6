#!/usr/bin/env python3
# Chaos against a running Lacquer from outside (the release binary, say), as a user's clients
# would be: 8 threads for DURATION seconds send seeded random requests (hits, misses, slow and
# truncated bodies, 5xx, no-cache/no-store, HEAD, Range, POST, PURGE, dropped origin connections)
# with random fates (read all, close after sending or after a delay, reset, half-close, pipeline
# then close, slow reader). Every complete 200 or 206 body is checked byte for byte.
#
#   Tests/chaos_release.py SEED LACQUER_PORT DURATION_SECONDS
#
# Lacquer must be in front of the fixture origin (`fixture-origin --port P`, then
# `lacquer --backend http://127.0.0.1:P`). Loopback only; bounded by DURATION. Exits 1 on a
# wrong body. Watch the process's descriptors and RSS before and after (/proc/PID).
import random, socket, sys, time, threading
seed = int(sys.argv[1]); port = int(sys.argv[2]); duration = float(sys.argv[3])
def pattern(n): return bytes((97 + i % 26) for i in range(n))
problems = []; counts = {"ok": 0, "cut": 0, "err": 0}
lock = threading.Lock()
def one(r):
    size = r.choice([100, 5000, 70000, 300000]); delay = r.choice([0, 0, 20, 150]); i = r.randrange(4)
    kind = r.choice(["get", "slow", "trunc", "503", "nocache", "head", "range", "post", "purge", "drop"])
    q = f"cc=max-age%3D{r.choice([1,60])}&delay={delay}&id={i}"
    hdrs = ""; method = "GET"; body = b""
    path = f"/bytes/{size}?{q}"
    if kind == "slow": path = f"/slowbody/{size}/10?{q}"
    if kind == "trunc": path = f"/truncate/{size}?{q}"
    if kind == "503": path = f"/status/503?{q}"
    if kind == "nocache": hdrs = "Cache-Control: " + r.choice(["no-cache", "no-cache, no-store", "max-age=0"]) + "\r\n"
    if kind == "head": method = "HEAD"
    if kind == "range": a = r.randrange(size); hdrs = f"Range: bytes={a}-{min(size-1, a+r.randrange(5000))}\r\n"
    if kind == "post": method = "POST"; body = pattern(r.choice([0, 10, 70000])); path = f"/upload?delay={delay}"; hdrs = f"Content-Length: {len(body)}\r\n"
    if kind == "purge": method = "PURGE"
    if kind == "drop": path = f"/drop?{q}"
    req = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{hdrs}\r\n".encode() + body
    fate = r.choice(["read", "close", "delay", "rst", "half", "pipeline", "slow"])
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    try:
        s.sendall(req * (2 if fate == "pipeline" else 1))
        if fate == "close": return
        if fate == "delay": time.sleep(r.random() * 0.1); return
        if fate == "rst":
            time.sleep(r.random() * 0.05)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"); return
        if fate == "half": s.shutdown(socket.SHUT_WR)
        if fate == "slow": time.sleep(0.1 + r.random() * 0.1)
        if fate == "pipeline": time.sleep(r.random() * 0.03); return
        data = b""
        while b"\r\n\r\n" not in data:
            c = s.recv(65536)
            if not c: raise EOFError
            data += c
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin1").split("\r\n"); status = int(lines[0].split()[1])
        h = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        if method == "HEAD" or status in (204, 304): return
        if "content-length" in h:
            n = int(h["content-length"])
            while len(rest) < n:
                c = s.recv(65536)
                if not c: raise EOFError
                rest += c
        elif h.get("transfer-encoding", "").lower() == "chunked":
            out = b""
            while True:
                while b"\r\n" not in rest:
                    c = s.recv(65536)
                    if not c: raise EOFError
                    rest += c
                line, rest = rest.split(b"\r\n", 1); n = int(line.split(b";")[0], 16)
                while len(rest) < n + 2:
                    c = s.recv(65536)
                    if not c: raise EOFError
                    rest += c
                if n == 0: break
                out += rest[:n]; rest = rest[n+2:]
            rest = out
        else:
            while True:
                c = s.recv(65536)
                if not c: break
                rest += c
        if status == 200 and kind in ("get", "slow", "trunc", "nocache") and rest != pattern(size):
            with lock: problems.append(f"{kind} {path} {status} got {len(rest)} bytes, cache-status {h.get('cache-status')}")
        if status == 206:
            a = int(h["content-range"].split()[1].split("-")[0])
            if rest != pattern(size)[a:a+len(rest)]:
                with lock: problems.append(f"206 wrong bytes {path}")
        with lock: counts["ok"] += 1
    except (EOFError, ConnectionError, socket.timeout):
        with lock: counts["cut"] += 1
    finally:
        s.close()
def worker(w):
    r = random.Random(seed * 1000 + w); end = time.time() + duration
    while time.time() < end:
        try: one(r)
        except Exception as e:
            with lock: counts["err"] += 1
threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
print(counts, "problems:", len(problems)); [print(" ", p) for p in problems[:10]]
sys.exit(1 if problems else 0)
