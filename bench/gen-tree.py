#!/usr/bin/env python3
"""Generates a large desired-state tree for benchmarks.

gen-tree.py DIR [GUESTS] [STORAGES] [INTERFACE_LINES]
Defaults: 10,000 guest configs over 4 nodes (80 % VMs, 20 % containers), a
1,000-entry storage.cfg and a 4,000-line interfaces file. Everything it
writes is valid, so the benchmark measures a full validation pass.
"""
import os
import sys

root = sys.argv[1]
guests = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
storages = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
interface_lines = int(sys.argv[4]) if len(sys.argv) > 4 else 4000
nodes = ["pve1", "pve2", "pve3", "pve4"]

os.makedirs(root, exist_ok=True)

# storage.cfg: local, local-lvm and many NFS/dir/lvmthin entries.
with open(os.path.join(root, "storage.cfg"), "w") as f:
    f.write("dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\n")
    f.write("lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n\n")
    for i in range(storages - 2):
        kind = i % 3
        if kind == 0:
            f.write(f"nfs: nfs{i}\n\texport /srv/vm{i}\n\tpath /mnt/pve/nfs{i}\n\tserver 192.0.2.{i % 250 + 1}\n"
                    f"\tcontent images,rootdir\n\toptions vers=4.2\n\tprune-backups keep-last=3\n\n")
        elif kind == 1:
            f.write(f"dir: dir{i}\n\tpath /srv/dir{i}\n\tcontent images,rootdir,iso\n\tshared 0\n\n")
        else:
            f.write(f"lvmthin: thin{i}\n\tthinpool data{i}\n\tvgname vg{i}\n\tcontent rootdir,images\n\tnodes pve1,pve2\n\n")

# interfaces: NICs, bonds and bridges until the line budget is used.
bridges = []
with open(os.path.join(root, "interfaces"), "w") as f:
    f.write("auto lo\niface lo inet loopback\n\n")
    lines = 3
    i = 0
    while lines < interface_lines:
        f.write(f"iface eno{i} inet manual\n\n")
        f.write(f"auto vmbr{i}\niface vmbr{i} inet static\n\taddress 198.51.{100 + i // 250 % 3}.{i % 250 + 1}/24\n"
                f"\tbridge-ports eno{i}\n\tbridge-stp off\n\tbridge-fd 0\n\tmtu 1500\n\n")
        bridges.append(f"vmbr{i}")
        lines += 11
        i += 1

for node in nodes:
    os.makedirs(os.path.join(root, "nodes", node, "qemu-server"), exist_ok=True)
    os.makedirs(os.path.join(root, "nodes", node, "lxc"), exist_ok=True)

for n in range(guests):
    vmid = 100 + n
    node = nodes[n % len(nodes)]
    bridge = bridges[n % len(bridges)]
    mac = "BC:24:11:%02X:%02X:%02X" % ((n >> 16) & 255, (n >> 8) & 255, n & 255)
    uuid = "%08x-1111-4222-8333-%012x" % (n, n)
    if n % 5 == 4:
        text = (f"#container {vmid}\narch: amd64\ncores: 2\nhostname: ct{vmid}\nmemory: 1024\n"
                f"net0: name=eth0,bridge={bridge},firewall=1,hwaddr={mac},ip=dhcp,type=veth\n"
                f"onboot: 1\nostype: debian\nrootfs: local-lvm:vm-{vmid}-disk-0,size=8G\nswap: 512\nunprivileged: 1\n")
        path = os.path.join(root, "nodes", node, "lxc", f"{vmid}.conf")
    else:
        text = (f"#vm {vmid}\nagent: 1\nboot: order=scsi0;net0\ncores: 4\ncpu: x86-64-v2-AES\n"
                f"ide2: local:iso/debian.iso,media=cdrom\nmemory: 4096\nmeta: creation-qemu=9.0.2,ctime=1725975013\n"
                f"name: vm{vmid}\nnet0: virtio={mac},bridge={bridge},firewall=1\nnuma: 0\nonboot: 1\nostype: l26\n"
                f"scsi0: local-lvm:vm-{vmid}-disk-0,iothread=1,size=32G\nscsihw: virtio-scsi-single\n"
                f"smbios1: uuid={uuid}\nsockets: 1\nvmgenid: {uuid}\n\n[PENDING]\nmemory: 8192\n")
        path = os.path.join(root, "nodes", node, "qemu-server", f"{vmid}.conf")
    with open(path, "w") as f:
        f.write(text)
