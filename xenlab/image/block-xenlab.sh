#!/bin/sh
# The lab's vbd hotplug script (`script=block-xenlab` in the guests' disk specs): what Debian's
# `block` does for a `phy:` device, without its bash libraries, locks and sharing checks (each
# lab guest has its own loop device). Like vif-bridge, the bash script could outlast libxl's
# hotplug timeout under emulation on a loaded machine (docs/lab.md). libxl runs it with the
# action (add, remove) as $1 and XENBUS_PATH in the environment; `params` holds the device.
export PATH=/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
case "$1" in
  add)
    dev=$(xenstore-read "$XENBUS_PATH/params") || exit 1
    # block-common.sh's device_major_minor and write_dev: blkback waits for physical-device
    mm=$(stat -L -c %t:%T "$dev") || {
      xenstore-write "$XENBUS_PATH/hotplug-error" "no device $dev" \
                     "$XENBUS_PATH/hotplug-status" error
      exit 1
    }
    xenstore-write "$XENBUS_PATH/physical-device" "$mm" \
                   "$XENBUS_PATH/physical-device-path" "$dev" \
                   "$XENBUS_PATH/hotplug-status" connected || exit 1;;
  remove) ;;  # the loop device is the lab's to release, as for `phy:` in `block`
esac
exit 0
