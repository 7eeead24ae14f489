"""Stand-ins for the math-verify child (symbolic._worker_main), for tests/test_rewards.py: one
that waits without using CPU time before it answers, as a child on a loaded machine does, and
one that computes forever, as math-verify on an adversarial answer does."""

import time


def idle_then_equal(conn) -> None:
    conn.send("ready")
    while True:
        conn.recv()
        time.sleep(3.0)       # longer than the 2 s timeout on the wall clock, no CPU time
        conn.send((True, None))


def busy_forever(conn) -> None:
    conn.send("ready")
    conn.recv()
    while True:
        pass
