#!/bin/sh
# One command per TCP connection from Dom0 (busybox nc -e): the guest's workloads.
# Every workload is bounded in count and time.
# Debian's busybox-static runs its own applets before PATH (FEATURE_SH_STANDALONE): a bare
# `ping` here is busybox's, which has no -f ("invalid option -- 'f'", exit 1, no packet sent).
# iputils' ping is therefore always called by its path.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
PING=/usr/bin/ping
read -t 10 cmd a1 a2 a3 a4 || exit 0
up() { cut -d' ' -f1 /proc/uptime; }
case "$cmd" in
  hello) echo "hello $(cat /etc/xenlab-name) uptime $(up)";;
  ping)  # ping IP COUNT: ordinary ping (reachability, ARP)
         timeout 30 $PING -c "$a2" -i 0.2 -W 1 "$a1"; echo "rc=$?";;
  pingflood) # pingflood IP COUNT DEADLINE [SIZE]: iputils flood ping in the background, quiet;
         # `ping -i 0` can hang under emulation: -f with both -c and -w, under timeout
         (setsid timeout $((a3 + 10)) $PING -f -q -s "${a4:-56}" -c "$a2" -w "$a3" "$a1" > /tmp/pingflood.out 2>&1;
          echo "rc=$? end $(up)" >> /tmp/pingflood.out) </dev/null >/dev/null 2>&1 &
         echo "started pingflood $a1 at $(up)";;
  udpflood) # udpflood IP SECONDS [SIZE [RATE]]: SIZE-byte (64) datagrams to IP's UDP sink (port
         # 9001) at iperf 2's RATE (e.g. 300pps; by default far more than it can reach: flat out)
         (setsid timeout $((a2 + 10)) iperf -c "$a1" -u -p 9001 -b "${a4:-10000M}" -l "${a3:-64}" -t "$a2" \
            > /tmp/udpflood.out 2>&1; echo "rc=$? end $(up)" >> /tmp/udpflood.out) \
            </dev/null >/dev/null 2>&1 &
         echo "started udpflood $a1 at $(up)";;
  serve) # serve SECONDS: for SECONDS, a web server (busybox httpd, a 16 KiB page) on port 80,
         # a TCP sink on port 9000 (one stream), its stdin a pipe that stays open (busybox
         # nc ends when its stdin does), and a UDP sink on port 9001 (iperf's server)
         mkdir -p /www && head -c 16384 /dev/zero > /www/index.html
         (timeout "$a1" httpd -f -p 80 -h /www) </dev/null >/dev/null 2>&1 &
         (sleep "$a1" | timeout "$a1" nc -l -p 9000 > /dev/null) >/dev/null 2>&1 &
         (timeout "$a1" iperf -s -u -p 9001 > /tmp/udpsink.out 2>&1) </dev/null &
         echo "serving at $(up)";;
  web)   # web IP SECONDS: fetch IP's page over and over, one request at a time (HTTP/1.0 by
         # hand: busybox-static's wget segfaults here, a static glibc resolving an address)
         (timeout "$a2" sh -c "while :; do (printf 'GET / HTTP/1.0\r\n\r\n'; sleep 0.5) |
           nc $a1 80 > /dev/null || sleep 1; done" > /tmp/web.out 2>&1) </dev/null &
         echo "started web $a1 at $(up)";;
  bulk)  # bulk IP SECONDS: one TCP stream of zeros to IP's sink (port 9000)
         (timeout "$a2" nc "$a1" 9000 < /dev/zero > /tmp/bulk.out 2>&1) </dev/null &
         echo "started bulk $a1 at $(up)";;
  log)   # log NAME: what a background workload printed (web, bulk, udpflood, udpsink, disk)
         cat "/tmp/$a1.out" 2>/dev/null | tail -5;;
  memory) # memory MIB SECONDS: touch MIB MiB of fresh memory (dd's one buffer, every page
         # faulted in), keep it in RAM (a file in the RAM root), hold it, give it back
         (dd if=/dev/zero of=/tmp/memhog bs="${a1}M" count=1 2>/dev/null; sleep "$a2";
          rm -f /tmp/memhog) </dev/null >/dev/null 2>&1 &
         echo "started memory at $(up)";;
  cpu)   # cpu SECONDS: one busy loop
         (timeout "$a1" sh -c 'while :; do :; done') </dev/null >/dev/null 2>&1 &
         echo "started cpu at $(up)";;
  disk)  # disk MIB [SECONDS]: write then read MIB MiB of the guest's disk, direct (no page
         # cache): once, or over and over in the background for SECONDS
         if [ ! -b /dev/xvda ]; then echo "no disk"
         elif [ -z "$a2" ]; then
           dd if=/dev/zero of=/dev/xvda bs=64k count=$((a1 * 16)) oflag=direct 2>&1 | tail -1
           dd if=/dev/xvda of=/dev/null bs=64k count=$((a1 * 16)) iflag=direct 2>&1 | tail -1
         else
           (timeout "$a2" sh -c "while :; do
              dd if=/dev/zero of=/dev/xvda bs=64k count=$((a1 * 16)) oflag=direct
              dd if=/dev/xvda of=/dev/null bs=64k count=$((a1 * 16)) iflag=direct; done" \
              > /tmp/disk.out 2>&1) </dev/null &
           echo "started disk at $(up)"
         fi;;
  mtu)   # mtu BYTES: eth0's MTU (netfront takes up to 65521 when netback offers scatter-gather)
         ip link set eth0 mtu "$a1" && cat /sys/class/net/eth0/mtu;;
  result) cat /tmp/pingflood.out 2>/dev/null;;
  stop)  killall ping iperf 2>/dev/null; echo stopped;;
  stat)  echo "uptime $(up)"; head -1 /proc/stat; grep -E 'xen|CPU0' /proc/interrupts
         grep -E '^Icmp:' /proc/net/snmp
         for c in rx_packets tx_packets; do echo "eth0 $c $(cat /sys/class/net/eth0/statistics/$c)"; done;;
  *)     echo "unknown command '$cmd'";;
esac
