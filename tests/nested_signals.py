"""Python source that ends a child-process script: five signals with Python handlers, sent 2000
times each while the main thread sleeps, so that some arrive inside another's handler; prints
"alive" if the process survives. Used where a library has given the thread an alternate signal
stack after it ran AMX code (tests/test_train_hardware.py, tests/test_serve_precision.py)."""

SEND_NESTED_SIGNALS = """
import os, signal, subprocess, time
names = ("SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGHUP", "SIGALRM")
for name in names:
    signal.signal(getattr(signal, name), lambda *_: None)
kills = "; ".join(f"kill -{n[3:]} {os.getpid()}" for n in names)
sender = subprocess.Popen(["bash", "-c", f"for i in $(seq 2000); do {kills}; done"])
deadline = time.monotonic() + 60
while sender.poll() is None and time.monotonic() < deadline:
    time.sleep(0.001)
print("alive")
"""
