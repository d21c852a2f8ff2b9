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
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOAD = os.path.join(HERE, "clusterfs-workload.py")
WRITER = os.path.join(HERE, "clusterfs-writer.py")
PHASES = ["create+write", "read", "stat", "rewrite", "unlink"]


def run(command, **kwargs):
    return subprocess.run(command, check=True, **kwargs)


def wait_for(predicate, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def is_mount(path, enter=None):
    command = (enter or []) + ["mountpoint", "-q", path]
    return subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


class Ours:
    """Our pmxcfs: a mount in this mount namespace; in cluster mode the daemon runs in its node's network namespace."""

    def __init__(self, binary, work, name, node="bench", namespace=None, corosync_conf=None):
        self.binary, self.name, self.node = binary, name, node
        self.base = os.path.join(work, name)
        self.mount = os.path.join(self.base, "mnt")
        os.makedirs(self.mount, exist_ok=True)
        self.namespace, self.corosync_conf = namespace, corosync_conf
        self.enter = None

    def arguments(self, local):
        return [self.binary, "--mount", self.mount, "--db", self.base + "/config.db", "--run-dir", self.base + "/run",
                "--node", self.node, "--ipc-name", "bench-" + self.name] + (["--local"] if local else [])

    def start(self, local=True):
        launcher = [] if local or not self.namespace else ["nsenter", f"--net=/run/netns/{self.namespace}"]
        extra = [] if local or not self.corosync_conf else ["--corosync-conf", self.corosync_conf]
        run(launcher + self.arguments(local) + extra)
        wait_for(lambda: is_mount(self.mount), f"{self.name} to mount")

    def seed(self, corosync_text):
        """A database holding the cluster's corosync.conf, made in local mode (so the next start is in cluster mode)."""
        self.start(local=True)
        with open(self.mount + "/corosync.conf", "w") as handle:
            handle.write(corosync_text)
        self.stop()

    def stop(self):
        pid_file = self.base + "/run/pmxcfs.pid"
        if os.path.exists(pid_file):
            try:
                os.kill(int(open(pid_file).read()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        try:
            wait_for(lambda: not is_mount(self.mount), f"{self.name} to unmount", timeout=10)
        except SystemExit:
            subprocess.run(["umount", "-l", self.mount], stderr=subprocess.DEVNULL)

    def path(self, relative):
        return os.path.join(self.mount, relative)

    def python(self):
        return ["python3"]


class Original:
    """The original pmxcfs: its paths are fixed (/etc/pve, /var/lib/pve-cluster, /run/pve-cluster, the node name from
    the host name, /etc/corosync/corosync.conf imported at startup), so each runs in its own mount and UTS namespace
    with /etc and /var/lib as overlays over the host's (nothing of the host is written) and a private /run; /dev/shm
    stays shared with the node's corosync. The workload runs inside that mount namespace."""

    def __init__(self, binary, work, name, node="bench", namespace=None, address="192.0.2.10", corosync_etc=None):
        self.binary, self.name, self.node, self.namespace = binary, name, node, namespace
        self.base = os.path.join(work, name)
        self.address, self.corosync_etc = address, corosync_etc
        self.process = None
        self.mount = "/etc/pve"
        for sub in ("etc-upper", "etc-work", "lib-upper", "lib-work"):
            os.makedirs(os.path.join(self.base, sub), exist_ok=True)

    def start(self, local=True):
        b = self.base
        corosync = f"mount --bind {self.corosync_etc} /etc/corosync && " if self.corosync_etc else ""
        script = (f"mount -t overlay overlay -o lowerdir=/etc,upperdir={b}/etc-upper,workdir={b}/etc-work /etc && "
                  f"mount -t overlay overlay -o lowerdir=/var/lib,upperdir={b}/lib-upper,workdir={b}/lib-work /var/lib && "
                  f"mount -t tmpfs tmpfs /run && {corosync}hostname {self.node} && "
                  f"grep -v '[[:space:]]{self.node}$' /etc/hosts > /etc/hosts.bench; "
                  f"echo '{self.address} {self.node}' >> /etc/hosts.bench && mv /etc/hosts.bench /etc/hosts && "
                  f"exec {self.binary} -f {'-l' if local else ''}")
        launcher = ["ip", "netns", "exec", self.namespace] if self.namespace else ["unshare", "-n"]
        self.process = subprocess.Popen(launcher + ["unshare", "-m", "-u", "--propagation", "private", "bash", "-c", script],
                                        stdout=open(b + "/log", "a"), stderr=subprocess.STDOUT)
        wait_for(lambda: self.pid() is not None and is_mount("/etc/pve", self.enter_prefix()), f"original {self.name} to mount")

    def pid(self):
        """The daemon's pid: the launcher's descendant that runs the binary."""
        found = subprocess.run(["pgrep", "-f", "^" + self.binary], capture_output=True, text=True).stdout.split()
        for candidate in found:
            try:
                if os.readlink(f"/proc/{candidate}/ns/mnt") != os.readlink("/proc/self/ns/mnt") and self.owns(int(candidate)):
                    return int(candidate)
            except OSError:
                continue
        return None

    def owns(self, pid):
        while pid > 1:
            if pid == self.process.pid:
                return True
            try:
                pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                return False
        return False

    def enter_prefix(self):
        pid = self.pid()
        return ["nsenter", "-t", str(pid), "-m"] if pid else ["false"]

    def stop(self):
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
        if self.process:
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def path(self, relative):
        return os.path.join(self.mount, relative)

    def python(self):
        return self.enter_prefix() + ["python3"]


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


class Corosync:
    """Corosync nodes in network namespaces, as in ../shared/design/recipes/corosync-3-nodes.sh."""

    def __init__(self, work, nodes, prefix):
        self.work, self.nodes, self.prefix = os.path.join(work, prefix), nodes, prefix
        self.launchers = []
        os.makedirs(self.work, exist_ok=True)
        sw = f"{prefix}-sw"
        run(["ip", "netns", "add", sw])
        run(["ip", "-n", sw, "link", "set", "lo", "up"])
        run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", sw, "link", "set", "br0", "up"])
        run(["corosync-keygen", "-k", self.work + "/authkey"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.configuration = self.render()
        for i in range(1, nodes + 1):
            ns = self.namespace(i)
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"sw{i}", "netns", sw])
            run(["ip", "-n", sw, "link", "set", f"sw{i}", "master", "br0", "up"])
            run(["ip", "-n", ns, "addr", "add", f"192.0.2.1{i}/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            d = self.directory(i)
            for sub in ("run", "lib", "etc"):
                os.makedirs(f"{d}/{sub}", exist_ok=True)
            shutil.copy(self.work + "/authkey", d + "/etc/authkey")
            os.chmod(d + "/etc/authkey", 0o400)
            with open(d + "/etc/corosync.conf", "w") as handle:
                handle.write(self.configuration)
            script = (f"mount --bind {d}/run /run && mount --bind {d}/etc /etc/corosync && "
                      f"mount --bind {d}/lib /var/lib/corosync && exec corosync -f")
            self.launchers.append(subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private",
                                                    "sh", "-c", script], stdout=open(d + "/corosync.log", "a"),
                                                   stderr=subprocess.STDOUT))
        wait_for(lambda: all(self.quorate(i) for i in range(1, nodes + 1)), "corosync quorum", timeout=90)

    def namespace(self, i):
        return f"{self.prefix}-n{i}"

    def directory(self, i):
        return f"{self.work}/n{i}"

    def render(self):
        text = "logging {\n  to_syslog: no\n  to_stderr: yes\n}\n\nnodelist {\n"
        for j in range(1, self.nodes + 1):
            text += f"  node {{\n    name: node{j}\n    nodeid: {j}\n    quorum_votes: 1\n    ring0_addr: 192.0.2.1{j}\n  }}\n"
        text += ("}\n\nquorum {\n  provider: corosync_votequorum\n}\n\ntotem {\n"
                 f"  cluster_name: {self.prefix}\n  config_version: 1\n  interface {{\n    linknumber: 0\n  }}\n"
                 "  ip_version: ipv4-6\n  link_mode: passive\n  secauth: on\n  token: 3000\n  version: 2\n}\n")
        return text

    def quorate(self, i):
        result = subprocess.run(["ip", "netns", "exec", self.namespace(i), "corosync-quorumtool", "-s"],
                                capture_output=True, text=True)
        return "Quorate:          Yes" in result.stdout

    def down(self):
        for i in range(1, self.nodes + 1):
            subprocess.run(["ip", "netns", "exec", self.namespace(i), "corosync-cfgtool", "-H", "--force"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for launcher in self.launchers:
            try:
                launcher.wait(timeout=15)
            except subprocess.TimeoutExpired:
                launcher.kill()
        for i in range(1, self.nodes + 1):
            subprocess.run(["ip", "netns", "del", self.namespace(i)], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", f"{self.prefix}-sw"], stderr=subprocess.DEVNULL)


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def writers(targets, directory, files, size):
    """One writer per target at once (a shared start time); per phase: p50, p99 (us) and files per second."""
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
    return figures


def cluster_mode(binary, original, work, files):
    print(f"== Cluster mode: {files} files of 512 B per writer; p50 / p99 per operation (us), files per second ==")
    rows = []

    def measure(label, targets, single_writer_only=False):
        one = writers(targets[:1], f"one-{len(rows)}", files, 512)
        rows.append((label + ", one writer", one))
        if not single_writer_only:
            rows.append((label + f", {len(targets)} writers at once", writers(targets, f"all-{len(rows)}", files, 512)))

    local = Ours(binary, work, "cluster-local")
    local.start()
    try:
        measure("ours, local mode", [local], True)
    finally:
        local.stop()
    if original:
        theirs = Original(original, work, "cluster-original-local")
        theirs.start()
        try:
            measure("original, local mode", [theirs], True)
        finally:
            theirs.stop()
    for nodes in (1, 3):
        cluster = Corosync(work, nodes, f"cfsb{os.getpid() % 10000}x{nodes}")
        try:
            daemons = []
            for i in range(1, nodes + 1):
                daemon = Ours(binary, work, f"c{nodes}-n{i}", node=f"node{i}", namespace=cluster.namespace(i),
                              corosync_conf=cluster.directory(i) + "/etc/corosync.conf")
                daemon.seed(cluster.configuration)
                daemons.append(daemon)
            try:
                for daemon in daemons:
                    daemon.start(local=False)
                wait_for(lambda: all(os.path.isdir(d.path(f"nodes/{d.node}")) for d in daemons), "cluster sync")
                measure(f"ours, {nodes}-node cluster", daemons, nodes == 1)
            finally:
                for daemon in daemons:
                    daemon.stop()
            if original:
                theirs = [Original(original, work, f"c{nodes}-orig-n{i}", node=f"node{i}", namespace=cluster.namespace(i),
                                   address=f"192.0.2.1{i}", corosync_etc=cluster.directory(i) + "/etc")
                          for i in range(1, nodes + 1)]
                try:
                    for daemon in theirs:
                        daemon.start(local=False)
                    wait_for(lambda: all(subprocess.run(d.enter_prefix() + ["touch", f"/etc/pve/bench-ready-{d.node}"],
                                                        stderr=subprocess.DEVNULL).returncode == 0 for d in theirs),
                             "the original's cluster to take writes", timeout=90)
                    measure(f"original, {nodes}-node cluster", theirs, nodes == 1)
                finally:
                    for daemon in theirs:
                        daemon.stop()
        finally:
            cluster.down()
    print(f"  {'setup':<44}{'create+write p50/p99':>22}{'files/s':>9}{'rewrite p50/p99':>19}{'files/s':>9}")
    for label, figures in rows:
        cw, rw = figures["create+write"], figures["rewrite"]
        print(f"  {label:<44}{cw[0]:>12.0f} / {cw[1]:<7.0f}{cw[2]:>9.0f}{rw[0]:>9.0f} / {rw[1]:<7.0f}{rw[2]:>9.0f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("pmxcfs")
    parser.add_argument("--original")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cluster-files", type=int, default=500)
    parser.add_argument("--skip-cluster", action="store_true")
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix="pmxcfs-bench-")
    try:
        local_mode(options.pmxcfs, options.original, work, options.files, options.rounds)
        if not options.skip_cluster:
            cluster_mode(options.pmxcfs, options.original, work, options.cluster_files)
    finally:
        subprocess.run(["umount", "-l", work + "/tmpfs"], stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
