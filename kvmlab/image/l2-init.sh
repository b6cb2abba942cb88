#!/bin/sh
# /init of a KVM lab guest (L2: busybox, iputils ping, iperf 2, virtio-net). Name and address
# come from the kernel command line (kvmlab.name=, kvmlab.ip=); L1 drives it through TCP port
# 5000 (/ctl.sh, one command per connection).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /tmp /etc
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^kvmlab\.$1=//p"; }
NAME=$(arg name); IP=$(arg ip)
echo "$NAME" > /etc/kvmlab-name
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
modprobe virtio_pci; modprobe virtio_net
i=0; while [ $i -lt 100 ] && [ ! -e /sys/class/net/eth0 ]; do sleep 0.1; i=$((i+1)); done
ip link set lo up
ip addr add "$IP/24" dev eth0
ip link set eth0 up
echo "KVMLAB-L2-UP $NAME $IP uptime $(cut -d' ' -f1 /proc/uptime)s"
while true; do nc -l -p 5000 -e /ctl.sh; done
