#!/bin/sh
# /init of the lab's PV Dom0 (busybox, Debian's Xen 4.17 tools, Python and the project).
# Starts the toolstack daemons, the guest bridge, the host link (QEMU user net, reached only
# through hostfwd) and the lab agent (xenlab.agent) that the host drives everything through.
export PATH=/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONPATH=/opt/judicator:/opt/judicator/site-packages
export PYTHONDONTWRITEBYTECODE=1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# devtmpfs lacks these; the hotplug scripts' locking stats /dev/stdin
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs shm /dev/shm
mount -t tmpfs run /run
mkdir -p /run/xen /run/lock /run/xenstored /var/log/xen/console /var/lib/xenlab /tmp
echo "XENLAB: dom0 userspace, uptime $(cut -d' ' -f1 /proc/uptime)s"
while read -r m args; do
  modprobe "$m" $args || echo "XENLAB: modprobe $m failed"
done < /etc/xenlab/modules
mount -t xenfs xenfs /proc/xen
ip link set lo up
xenstored --pid-file /run/xen/xenstored.pid || echo "XENLAB: xenstored failed"
i=0; while [ $i -lt 40 ] && ! xenstore-read -s / >/dev/null 2>&1; do sleep 0.25; i=$((i+1)); done
xen-init-dom0 || echo "XENLAB: xen-init-dom0 failed"
xenconsoled --pid-file=/run/xen/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console \
  || echo "XENLAB: xenconsoled failed"
# the guests' bridge: traffic between guests stays inside this VM
ip link add name xenbr0 type bridge stp_state 0 forward_delay 0
ip addr add 198.18.77.1/24 dev xenbr0
ip link set xenbr0 up
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
# the host link: QEMU's user network (restricted: only the host's forwarded ports reach us)
for n in /sys/class/net/*; do
  n=${n##*/}
  case $n in eth*|en*) ;; *) continue;; esac
  ip addr add 10.0.2.15/24 dev "$n" && ip link set "$n" up && echo "XENLAB: host link $n"
done
echo "XENLAB: toolstack up, uptime $(cut -d' ' -f1 /proc/uptime)s"
python3 -m xenlab.agent --listen 0.0.0.0:8000 > /var/log/xenlab-agent.log 2>&1 &
i=0; while [ $i -lt 600 ] && ! grep -q listening /var/log/xenlab-agent.log; do sleep 0.2; i=$((i+1)); done
cat /var/log/xenlab-agent.log
echo "XENLAB-DOM0-READY uptime $(cut -d' ' -f1 /proc/uptime)s"
exec setsid sh -c 'exec sh </dev/hvc0 >/dev/hvc0 2>&1'
