#!/bin/sh
# /init of the KVM lab's L1: a KVM host (Debian's kernel under QEMU TCG, AMD SVM emulated).
# Mounts (debugfs for KVM's per-VM statistics, cgroup v2 for the guests' scopes), loads kvm_amd
# with nested paging and the tc modules, makes the guests' bridge and starts the lab agent
# (xenlab.agent) that the host drives everything through. iproute2 is called by its path:
# Debian's busybox-static runs its own applets before PATH.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONPATH=/opt/judicator:/opt/judicator/site-packages
export PYTHONDONTWRITEBYTECODE=1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs shm /dev/shm
mount -t tmpfs run /run
mount -t debugfs debugfs /sys/kernel/debug
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /run/kvmlab /run/lock /tmp /var/log/xenlab
echo "KVMLAB: L1 userspace, uptime $(cut -d' ' -f1 /proc/uptime)s"
while read -r m args; do
  modprobe "$m" $args || echo "KVMLAB: modprobe $m failed"
done < /etc/kvmlab/modules
[ -c /dev/kvm ] && echo "KVMLAB: /dev/kvm ready, npt=$(cat /sys/module/kvm_amd/parameters/npt)" \
  || echo "KVMLAB: no /dev/kvm"
# the guests' scopes: machine.slice/kvmlab-NAME.scope, with the cpu controller (cpu.max)
echo +cpu > /sys/fs/cgroup/cgroup.subtree_control
mkdir -p /sys/fs/cgroup/machine.slice
echo +cpu > /sys/fs/cgroup/machine.slice/cgroup.subtree_control
/usr/bin/ip link set lo up
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
# the guests' bridge: their traffic stays inside this VM (198.18.88.0/24)
/usr/bin/ip link add name br0 type bridge stp_state 0 forward_delay 0
/usr/bin/ip addr add 198.18.88.1/24 dev br0
/usr/bin/ip link set br0 up
# the host link: QEMU's user network (restricted: only the host's forwarded ports reach us)
for n in /sys/class/net/*; do
  n=${n##*/}
  case $n in eth*|en*) ;; *) continue;; esac
  /usr/bin/ip addr add 10.0.2.15/24 dev "$n" && /usr/bin/ip link set "$n" up && echo "KVMLAB: host link $n"
done
python3 -m xenlab.agent --listen 0.0.0.0:8000 > /var/log/kvmlab-agent.log 2>&1 &
i=0; while [ $i -lt 900 ] && ! grep -q listening /var/log/kvmlab-agent.log; do sleep 0.2; i=$((i+1)); done
cat /var/log/kvmlab-agent.log
echo "KVMLAB-L1-READY uptime $(cut -d' ' -f1 /proc/uptime)s"
exec setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'
