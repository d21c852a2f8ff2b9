#!/bin/sh
# Stage 2, in the guest's view of the host root: mount the pseudo file
# systems, run the test script, record its exit status, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/shm /dev/pts /run/netns /run/network
mount -t tmpfs tmpfs /dev/shm
mount -t devpts devpts /dev/pts
# A checkout below one of those tmpfs mounts (a clone under /tmp) is shown
# again at its own path.
repo=$(cat /mnt/out/repo.path 2>/dev/null)
if [ -n "$repo" ] && [ -d /.checkout ]; then
  mkdir -p "$repo" && mount --bind /.checkout "$repo" || echo "stage2: cannot show the checkout at $repo"
fi
ip link set lo up
echo "guest kernel $(uname -r)"
sh /mnt/out/test.sh > /mnt/out/result.txt 2>&1
echo $? > /mnt/out/status
sync
echo o > /proc/sysrq-trigger
poweroff -f
