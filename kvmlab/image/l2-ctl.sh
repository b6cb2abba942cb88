#!/bin/sh
# One command per TCP connection from L1 (busybox nc -e): a KVM lab guest's workloads, each
# bounded in count and time. iputils' ping is called by its path (busybox's has no -f).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
PING=/usr/bin/ping
read -t 10 cmd a1 a2 a3 a4 || exit 0
up() { cut -d' ' -f1 /proc/uptime; }
case "$cmd" in
  up)    echo "up $(cat /etc/kvmlab-name) uptime $(up)";;
  ping)  # ping IP COUNT: ordinary ping (reachability, ARP)
         timeout 30 $PING -c "$a2" -i 0.2 -W 1 "$a1"; echo "rc=$?";;
  pingflood) # pingflood IP COUNT SECONDS [SIZE]: iputils flood ping in the background, quiet,
         # bounded by both -c and -w, under timeout; `result` prints its summary
         rm -f /tmp/pingflood.out
         (setsid timeout $((a3 + 10)) $PING -f -q -s "${a4:-56}" -c "$a2" -w "$a3" "$a1" > /tmp/pingflood.out.part 2>&1;
          echo "rc=$? end $(up)" >> /tmp/pingflood.out.part; mv /tmp/pingflood.out.part /tmp/pingflood.out) \
           </dev/null >/dev/null 2>&1 &
         echo "started pingflood $a1 at $(up)";;
  result) cat /tmp/pingflood.out 2>/dev/null || echo running;;
  iperf-udp) # iperf-udp IP SECONDS RATE [SIZE]: iperf 2 UDP at RATE (e.g. 2M) to IP's `serve`;
         # large datagrams only by default: small-packet UDP floods killed L2's QEMU in the probe
         (setsid timeout $((a2 + 10)) iperf -c "$a1" -u -p 9001 -b "$a3" -l "${a4:-1400}" -t "$a2" \
            > /tmp/udp.out 2>&1; echo "rc=$? end $(up)" >> /tmp/udp.out) </dev/null >/dev/null 2>&1 &
         echo "started iperf-udp $a1 at $(up)";;
  serve) # serve SECONDS: iperf 2's UDP sink on port 9001 for SECONDS
         (timeout "$a1" iperf -s -u -p 9001 > /tmp/udpsink.out 2>&1) </dev/null >/dev/null 2>&1 &
         echo "serving at $(up)";;
  cpuburn) # cpuburn SECONDS: one busy loop
         (timeout "$a1" sh -c 'while :; do :; done') </dev/null >/dev/null 2>&1 &
         echo "started cpuburn at $(up)";;
  mtu)   # mtu BYTES: eth0's MTU (virtio-net takes up to 65535 with mergeable receive buffers)
         ip link set eth0 mtu "$a1" && cat /sys/class/net/eth0/mtu;;
  log)   cat "/tmp/$a1.out" 2>/dev/null | tail -5;;
  stop)  killall ping iperf 2>/dev/null; echo stopped;;
  stat)  echo "uptime $(up)"; grep -E '^Icmp:' /proc/net/snmp
         for c in rx_packets tx_packets; do echo "eth0 $c $(cat /sys/class/net/eth0/statistics/$c)"; done;;
  *)     echo "unknown command '$cmd'";;
esac
