"""What the chaos runs share: a tally of outcomes and failures, and waiting for a listener."""
import socket
import threading
import time


class Tally:
    """Outcomes counted by name and failures kept (the first `shown` printed as they happen), from any thread."""

    def __init__(self, shown=20):
        self.stats, self.errors, self.shown = {}, [], shown
        self.lock = threading.Lock()

    def note(self, key):
        with self.lock:
            self.stats[key] = self.stats.get(key, 0) + 1

    def fail(self, message):
        with self.lock:
            self.errors.append(message)
            if len(self.errors) <= self.shown:
                print("FAIL", message, flush=True)


def wait_listening(port, seconds=5.0):
    """Waits until something accepts connections on 127.0.0.1:`port`; False if nothing did in time."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


CRASH_SIGNS = ("Fatal error", "fatal", "Crash", "Segmentation", "precondition")


def drain_and_check(lq, log_path, fail, seconds=30):
    """SIGTERM (a drain); a failure unless Lacquer exits 0 within `seconds`, or if its log shows a
    crash. Returns the log's text for further checks."""
    import signal
    import subprocess
    lq.send_signal(signal.SIGTERM)
    try:
        rc = lq.wait(seconds)
        if rc != 0:
            fail(f"exit code {rc} after SIGTERM")
    except subprocess.TimeoutExpired:
        fail(f"no exit {seconds} s after SIGTERM")
        lq.kill()
    with open(log_path) as f:
        text = f.read()
    for sign in CRASH_SIGNS:
        if sign in text:
            fail(f"log has {sign!r}")
    return text


def threaded_server(port, handler):
    """A TCP server on 127.0.0.1:`port`, a thread per connection, serving in the background."""
    import socketserver

    class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
