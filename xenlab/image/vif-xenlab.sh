#!/bin/sh
# The lab's vif hotplug script (`script=vif-xenlab` in the guests' vif specs): what Debian's
# vif-bridge does for a PV guest's netback vif, without its bash libraries. Under emulation on a
# loaded machine, vif-bridge outlasted libxl's hotplug timeout ("killing execution of
# /etc/xen/scripts/vif-bridge online because of timeout"; docs/lab.md). libxl runs it with the
# action (online, offline, add, remove) as $1 and `vif` and `XENBUS_PATH` in the environment.
export PATH=/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
action=$1
dev=${vif:?no vif in the environment}
bridge=$(xenstore-read "$XENBUS_PATH/bridge" 2>/dev/null) || bridge=xenbr0
case "$action" in
  online|add)
    # as vif-common.sh's setup_virtual_bridge_port: netback's fixed MAC, then on the bridge
    ip link set dev "$dev" address fe:ff:ff:ff:ff:ff || exit 1
    ip link set dev "$dev" master "$bridge" up || exit 1
    if [ "$action" = online ]; then
      xenstore-write "$XENBUS_PATH/hotplug-status" connected || exit 1
    fi;;
  offline|remove)
    ip link set dev "$dev" nomaster 2>/dev/null
    ip link set dev "$dev" down 2>/dev/null;;
esac
exit 0
