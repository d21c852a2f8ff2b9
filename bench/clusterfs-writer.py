#!/usr/bin/env python3
"""One writer of bench/clusterfs's cluster figures: COUNT files of SIZE bytes in DIR.

  clusterfs-writer.py DIR COUNT SIZE [START]

Waits until START (seconds since the epoch, so several writers begin
together), then creates+writes every file, then rewrites each the way
Proxmox's tools do (NAME.tmp.PID created exclusively, written, renamed over
NAME). Prints one line of JSON: per phase the latency of every operation
(microseconds) and the phase's start and end (seconds since the epoch).
"""
import json
import os
import sys
import time

directory, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
start_at = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
payload = b"x" * size
names = [os.path.join(directory, f"f{i}.cfg") for i in range(count)]
os.makedirs(directory, exist_ok=True)
while time.time() < start_at:
    time.sleep(min(0.01, start_at - time.time()))


def create_write(name):
    fd = os.open(name, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o640)
    os.write(fd, payload)
    os.close(fd)


def rewrite(name):
    tmp = f"{name}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
    os.write(fd, payload)
    os.close(fd)
    os.rename(tmp, name)


result = {}
for phase, operation in (("create+write", create_write), ("rewrite", rewrite)):
    latencies = []
    began = time.time()
    for name in names:
        before = time.perf_counter()
        operation(name)
        latencies.append(round((time.perf_counter() - before) * 1e6, 1))
    result[phase] = {"latencies": latencies, "start": began, "end": time.time()}
print(json.dumps(result))
