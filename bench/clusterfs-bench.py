#!/usr/bin/env python3
"""bench/clusterfs's measurements (run through bench/clusterfs, which builds and installs what they need).

  clusterfs-bench.py PMXCFS [--original BINARY] [--files N] [--rounds R] [--cluster-files N] [--skip-cluster]

Local mode: the same file workload (bench/clusterfs-workload.py) through our pmxcfs, through the original pmxcfs
when its binary is given, and through tmpfs, in interleaved rounds (the machine's load moves all three alike);
medians. Then the cost per file as a directory grows (100 and 3000 files).

Cluster mode: corosync nodes in network namespaces (after ../shared/design/recipes/corosync-3-nodes.sh), a pmxcfs
on each; 512 B files created+written, then rewritten through tmp+rename, by one writer and by one writer per node at
once: per-operation p50/p99 and throughput, on three nodes, on one node, and in local mode; the original beside ours
when its binary is given (run in private mount namespaces: its paths are fixed).
"""
import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
from cluster_lab import Corosync, Original, Ours, cpu_seconds, run, wait_for  # noqa: E402
WORKLOAD = os.path.join(HERE, "clusterfs-workload.py")
WRITER = os.path.join(HERE, "clusterfs-writer.py")
PHASES = ["create+write", "read", "stat", "rewrite", "unlink"]


class Tmpfs:
    def __init__(self, work):
        self.mount = os.path.join(work, "tmpfs")
        os.makedirs(self.mount, exist_ok=True)
        run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", self.mount])

    def stop(self):
        subprocess.run(["umount", self.mount])

    def path(self, relative):
        return os.path.join(self.mount, relative)

    def python(self):
        return ["python3"]


def workload(target, directory, files, size):
    path = target.path(directory)
    subprocess.run(target.python() + ["-c", f"import os; os.makedirs({path!r}, exist_ok=True)"], check=True)
    output = subprocess.check_output(target.python() + [WORKLOAD, path, str(files), str(size)])
    return json.loads(output)


def local_mode(binary, original, work, files, rounds):
    print("== Local mode (one node, no corosync) ==")
    targets = {"ours": Ours(binary, work, "local")}
    targets["ours"].start()
    if original:
        targets["original"] = Original(original, work, "original-local")
        targets["original"].start()
    targets["tmpfs"] = Tmpfs(work)
    try:
        for size in (512, 4096):
            samples = {name: [] for name in targets}
            for round_number in range(rounds):
                for name, target in targets.items():
                    samples[name].append(workload(target, f"r{size}-{round_number}", files, size))
            medians = {name: {phase: statistics.median(s[phase] for s in runs) for phase in PHASES}
                       for name, runs in samples.items()}
            print(f"{files} files of {size} B, median of {rounds} interleaved rounds (ms)")
            header = f"  {'phase':<14}{'ours':>9}"
            header += f"{'original':>10}{'ours/original':>15}" if original else ""
            print(header + f"{'tmpfs':>9}{'ours/tmpfs':>12}")
            for phase in PHASES:
                ours = medians["ours"][phase]
                line = f"  {phase:<14}{ours:>9.1f}"
                if original:
                    theirs = medians["original"][phase]
                    line += f"{theirs:>10.1f}{ours / max(theirs, 0.001):>14.2f}x"
                line += f"{medians['tmpfs'][phase]:>9.1f}{ours / max(medians['tmpfs'][phase], 0.001):>11.1f}x"
                print(line + ("  (slower than the original)" if original and ours > medians["original"][phase] else ""))
        print("cost per file as one directory grows (us per file, 512 B, median of rounds)")
        print(f"  {'phase':<14}" + "".join(f"{name + ' ' + str(n):>16}" for name in targets if name != "tmpfs"
                                           for n in (100, 3000)))
        growth = {}
        for name, target in targets.items():
            if name == "tmpfs":
                continue
            for count in (100, 3000):
                runs = [workload(target, f"g{count}-{r}", count, 512) for r in range(rounds)]
                growth[(name, count)] = {p: statistics.median(x[p] for x in runs) * 1000 / count for p in PHASES}
        for phase in PHASES:
            print(f"  {phase:<14}" + "".join(f"{growth[(name, n)][phase]:>16.0f}" for name in targets if name != "tmpfs"
                                               for n in (100, 3000)))
    finally:
        for target in targets.values():
            target.stop()


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def writers(targets, cluster, directory, files, size):
    """One writer per target at once (a shared start time); per phase: p50, p99 (us) and files per second; and the
    CPU every daemon of `cluster` used per file written (ms, both phases)."""
    daemons = [t.pid() for t in cluster]
    cpu_before = sum(cpu_seconds(pid) for pid in daemons)
    start = time.time() + 1.0
    processes = [subprocess.Popen(t.python() + [WRITER, t.path(f"{directory}-{i}"), str(files), str(size), str(start)],
                                  stdout=subprocess.PIPE) for i, t in enumerate(targets)]
    results = [json.loads(p.communicate()[0]) for p in processes]
    if any(p.returncode != 0 for p in processes):
        raise SystemExit("a writer failed")
    figures = {}
    for phase in ("create+write", "rewrite"):
        latencies = [value for r in results for value in r[phase]["latencies"]]
        span = max(r[phase]["end"] for r in results) - min(r[phase]["start"] for r in results)
        figures[phase] = (percentile(latencies, 0.5), percentile(latencies, 0.99), len(latencies) / span)
    figures["cpu"] = (sum(cpu_seconds(pid) for pid in daemons) - cpu_before) * 1000 / (files * len(targets) * 2)
    return figures


def cluster_mode(binary, original, work, files, rounds):
    print(f"== Cluster mode: {files} files of 512 B per writer; p50 / p99 per operation (us), files per second; "
          f"median of {rounds} interleaved rounds ==")
    results = {}
    runs = itertools.count()

    def measure(label, targets, ready, several):
        """Starts the daemons, waits until they take writes, runs one writer and (several) one per node, stops them."""
        for target in targets:
            target.start(local=len(targets) == 1 and getattr(target, "namespace", None) is None)
        try:
            wait_for(lambda: all(ready(t) for t in targets), f"{label} to take writes", timeout=90)
            results.setdefault(label + ", one writer", []).append(writers(targets[:1], targets, f"one-{next(runs)}", files, 512))
            if several:
                results.setdefault(label + f", {len(targets)} writers at once", []).append(
                    writers(targets, targets, f"all-{next(runs)}", files, 512))
        finally:
            for target in targets:
                target.stop()

    def ours_ready(daemon):
        # Joined, synced and quorate (a seed in local mode made the node directories already).
        return ('"quorate": 1' in open(daemon.path(".members")).read() or daemon.namespace is None) and \
            subprocess.run(["touch", daemon.path(f"bench-ready-{daemon.node}")]).returncode == 0

    def original_ready(daemon):
        return subprocess.run(daemon.enter_prefix() + ["touch", f"/etc/pve/bench-ready-{daemon.node}"],
                              stderr=subprocess.DEVNULL).returncode == 0

    clusters = {nodes: Corosync(work, nodes, f"cfsb{os.getpid() % 10000}x{nodes}") for nodes in (1, 3)}
    try:
        for round_number in range(rounds):
            # Every round starts from an empty database on both sides (the original's is made fresh in its overlay):
            # a tree grown by the rounds before would make one side's inserts dearer than the other's.
            measure("ours, local mode", [Ours(binary, work, f"cluster-local-{round_number}")], ours_ready, False)
            if original:
                measure("original, local mode", [Original(original, work, f"cluster-original-local-{round_number}")],
                        original_ready, False)
            for nodes, cluster in clusters.items():
                ours = [Ours(binary, work, f"c{nodes}-{round_number}-n{i}", node=f"node{i}", namespace=cluster.namespace(i),
                             corosync_conf=cluster.directory(i) + "/etc/corosync.conf") for i in range(1, nodes + 1)]
                for daemon in ours:
                    daemon.seed(cluster.configuration)
                measure(f"ours, {nodes}-node cluster", ours, ours_ready, nodes > 1)
                if original:
                    theirs = [Original(original, work, f"c{nodes}-orig-{round_number}-n{i}", node=f"node{i}",
                                       namespace=cluster.namespace(i), address=f"192.0.2.1{i}",
                                       corosync_etc=cluster.directory(i) + "/etc") for i in range(1, nodes + 1)]
                    measure(f"original, {nodes}-node cluster", theirs, original_ready, nodes > 1)
    finally:
        for cluster in clusters.values():
            cluster.down()
    medians = {label: {phase: tuple(statistics.median(r[phase][k] for r in runs) for k in range(3))
                       for phase in ("create+write", "rewrite")} for label, runs in results.items()}
    for label, runs in results.items():
        medians[label]["cpu"] = statistics.median(r["cpu"] for r in runs)
    print(f"  {'setup':<44}{'create+write p50/p99':>22}{'files/s':>9}{'rewrite p50/p99':>19}{'files/s':>9}{'CPU ms':>8}"
          "  p50 ours/original, CPU")
    for label, figures in medians.items():
        cw, rw = figures["create+write"], figures["rewrite"]
        peer = medians.get(label.replace("ours,", "original,")) if label.startswith("ours,") else None
        ratio = (f"  {cw[0] / peer['create+write'][0]:.2f}x / {rw[0] / peer['rewrite'][0]:.2f}x, "
                 f"{figures['cpu'] / max(peer['cpu'], 0.001):.2f}x") if peer else ""
        print(f"  {label:<44}{cw[0]:>12.0f} / {cw[1]:<7.0f}{cw[2]:>9.0f}{rw[0]:>9.0f} / {rw[1]:<7.0f}{rw[2]:>9.0f}"
              f"{figures['cpu']:>8.2f}{ratio}")
    print("  (CPU ms: what every pmxcfs of the cluster used together per file written, create+write and rewrite)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("pmxcfs")
    parser.add_argument("--original")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cluster-files", type=int, default=500)
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument("--skip-local", action="store_true", help="cluster figures only")
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix="pmxcfs-bench-")
    try:
        if not options.skip_local:
            local_mode(options.pmxcfs, options.original, work, options.files, options.rounds)
        if not options.skip_cluster:
            cluster_mode(options.pmxcfs, options.original, work, options.cluster_files, options.rounds)
    finally:
        subprocess.run(["umount", "-l", work + "/tmpfs"], stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
