# Shared by the scripts: install Debian packages that are missing.
# Usage: need_packages PKG...
need_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" > /dev/null
}

# Runs a swift build command, hiding per-file progress lines but keeping
# errors and warnings, and returns the build's own exit status.
quiet_build() {
  local rc_file rc
  rc_file=$(mktemp)
  { "$@" 2>&1 && echo 0 > "$rc_file" || echo $? > "$rc_file"; } |
    { grep -Ev '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Write|Linking|Applying|Wrapping)' || true; }
  rc=$(cat "$rc_file")
  rm -f "$rc_file"
  return "$rc"
}

# Prints the commands (each ending in "&& ") that mount this host's cgroup
# hierarchies again, as they are, in a new mount namespace whose /sys is fresh
# (`ip netns exec` mounts its own /sys; LXC needs the hierarchies).
cgroup_remounts() {
  awk '$5 ~ "^/sys/fs/cgroup" {
    split($0, halves, " - "); split(halves[2], right, " "); type = right[1]; n = split(right[3], option, ",")
    list = ""; for (i = 1; i <= n; i++) if (option[i] != "rw" && option[i] != "ro") list = list (list == "" ? "" : ",") option[i]
    if (list ~ /^name=/) list = "none," list
    if (type == "tmpfs") printf "mount -t tmpfs -o mode=755 cgroup %s && ", $5
    else if (type == "cgroup") printf "mkdir -p %s && mount -t cgroup -o %s cgroup %s && ", $5, list, $5
    else if (type == "cgroup2") printf "mkdir -p %s && mount -t cgroup2 cgroup2 %s && ", $5, $5
  }' /proc/self/mountinfo
}

# Writes a busybox OS template (a tarball LXC can start: busybox, its applets
# linked, an inittab that keeps init alive) to FILE.
busybox_template() { # FILE
  local root
  root=$(mktemp -d /tmp/pvectl-busybox-root-XXXXXX)
  mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,root}
  cp /bin/busybox "$root/bin/"
  for applet in $(/bin/busybox --list); do [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"; done
  ln -s ../bin/busybox "$root/sbin/init"
  printf '::sysinit:/bin/true\n::respawn:/bin/sleep 1000000\n' > "$root/etc/inittab"
  tar -C "$root" -czf "$1" . && rm -rf "$root"
}
