#!/usr/bin/env python3
"""The file workload of bench/clusterfs: N files of SIZE bytes in DIR.

Prints one line of JSON: milliseconds for create+write, read back, stat,
tmp+rename rewrite (as Proxmox's tools write configs) and unlink.
"""
import json
import os
import sys
import time

directory, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
payload = b"x" * size
names = [os.path.join(directory, f"f{i}.cfg") for i in range(count)]
timings = {}

start = time.perf_counter()
for name in names:
    fd = os.open(name, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o640)
    os.write(fd, payload)
    os.close(fd)
timings["create+write"] = time.perf_counter() - start

start = time.perf_counter()
for name in names:
    fd = os.open(name, os.O_RDONLY)
    data = os.read(fd, size + 1)
    os.close(fd)
    assert len(data) == size
timings["read"] = time.perf_counter() - start

start = time.perf_counter()
for name in names:
    os.stat(name)
timings["stat"] = time.perf_counter() - start

start = time.perf_counter()
for name in names:
    tmp = f"{name}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
    os.write(fd, payload)
    os.close(fd)
    os.rename(tmp, name)
timings["rewrite"] = time.perf_counter() - start

start = time.perf_counter()
for name in names:
    os.unlink(name)
timings["unlink"] = time.perf_counter() - start

print(json.dumps({k: round(v * 1000, 1) for k, v in timings.items()}))
