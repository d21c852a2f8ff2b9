"""Cluster file system lab on one machine: corosync nodes in network namespaces (after
../shared/design/recipes/corosync-3-nodes.sh), our pmxcfs on each, and the original pmxcfs run beside it in private
mount namespaces. Used by bench/clusterfs-bench.py and scripts/cluster-try."""
import os
import shutil
import signal
import subprocess
import time


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


def cpu_seconds(pid):
    """User and system CPU a process has used (seconds), from /proc/PID/stat; 0 when it is gone."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Ours:
    """Our pmxcfs: a mount in this mount namespace; in cluster mode the daemon runs in its node's network namespace."""

    def __init__(self, binary, work, name, node="bench", namespace=None, corosync_conf=None, ipc_name=None):
        self.binary, self.name, self.node = binary, name, node
        self.ipc_name = ipc_name or "bench-" + name
        self.base = os.path.join(work, name)
        self.mount = os.path.join(self.base, "mnt")
        os.makedirs(self.mount, exist_ok=True)
        self.namespace, self.corosync_conf = namespace, corosync_conf
        self.enter = None

    def arguments(self, local):
        return [self.binary, "--mount", self.mount, "--db", self.base + "/config.db", "--run-dir", self.base + "/run",
                "--node", self.node, "--ipc-name", self.ipc_name] + (["--local"] if local else [])

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

    def pid(self):
        try:
            return int(open(self.base + "/run/pmxcfs.pid").read())
        except (OSError, ValueError):
            return None

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
        for launcher in self.launchers:
            launcher.poll()
        Corosync.teardown(self.prefix, self.nodes)
        for launcher in self.launchers:
            try:
                launcher.wait(timeout=15)
            except subprocess.TimeoutExpired:
                launcher.kill()

    @staticmethod
    def teardown(prefix, nodes):
        """Stops every node's corosync cleanly and deletes the namespaces (also for a lab started by another process)."""
        for i in range(1, nodes + 1):
            subprocess.run(["ip", "netns", "exec", f"{prefix}-n{i}", "corosync-cfgtool", "-H", "--force"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        def empty():
            return all(not subprocess.run(["ip", "netns", "pids", f"{prefix}-n{i}"], capture_output=True, text=True).stdout.strip()
                       for i in range(1, nodes + 1))
        try:
            wait_for(empty, "the nodes' processes to stop", timeout=15)
        except SystemExit:
            for i in range(1, nodes + 1):
                subprocess.run(["ip", "netns", "pids", f"{prefix}-n{i}"], capture_output=True, text=True).stdout.split()
                subprocess.run(["sh", "-c", f"ip netns pids {prefix}-n{i} | xargs -r kill -9"])
        for i in range(1, nodes + 1):
            subprocess.run(["ip", "netns", "del", f"{prefix}-n{i}"], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", f"{prefix}-sw"], stderr=subprocess.DEVNULL)

    @staticmethod
    def cut(prefix, node, cut=True):
        """Drops all of a node's cluster traffic (nftables in its namespace), or lets it through again."""
        if cut:
            rules = ('table inet cut {\n chain in { type filter hook input priority 0; policy accept; iifname "eth0" drop; }\n'
                     ' chain out { type filter hook output priority 0; policy accept; oifname "eth0" drop; }\n}\n')
            run(["ip", "netns", "exec", f"{prefix}-n{node}", "nft", "-f", "-"], input=rules.encode())
        else:
            run(["ip", "netns", "exec", f"{prefix}-n{node}", "nft", "delete", "table", "inet", "cut"])
