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
