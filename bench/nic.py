"""Make veth devices process their receive side in threaded NAPI (a kernel thread per device), and back.

    python nic.py set DEV...        prints {"DEV": {original settings}, ...}
    python nic.py restore JSON      puts back what `set` printed

Why (bench/dataplane.py): a veth device without NAPI hands each received packet to the backlog of the
CPU that sent it, so the proxy's receive work (forwarding, nftables, the egress rewrite, UDP delivery)
would be charged to whatever process sent the packet - dnsperf on the client, named on the upstreams -
and hidden from the proxy. With GRO on, veth receives through NAPI; with `threaded` set, that NAPI
runs in a kthread `napi/<dev>-<id>` whose runtime is exact (/proc/<pid>/schedstat). veth only uses NAPI
for a packet if the sending device has no TSO (or the packet comes from a local socket), so TSO is
switched off on the sending ends. Run it inside the device's network namespace (ip netns exec: its
sysfs is the namespace's). Needs pyroute2 (the collection's .venv).
"""

import errno
import json
import subprocess
import sys

from pyroute2.ethtool import Ethtool

# NETIF_F_ALL_TSO: a sender with any of them makes veth skip NAPI for forwarded packets
TSO = ("tx-tcp-segmentation", "tx-tcp-ecn-segmentation", "tx-tcp-mangleid-segmentation", "tx-tcp6-segmentation",
       "tx-tcp-accecn-segmentation")


def _write(path, value):
    """Write a sysfs attribute. A container's network namespace has its sysfs superblock read-only (docker
    mounts it so): then remount it read-write for the write and read-only again right after (we run in
    ip netns exec's private mount namespace; the superblock's flag is what the container sees, restored)."""
    try:
        with open(path, "w") as handle:
            handle.write(str(value))
        return
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise
    subprocess.run(["mount", "-o", "remount,rw", "/sys"], check=True)
    try:
        with open(path, "w") as handle:
            handle.write(str(value))
    finally:
        subprocess.run(["mount", "-o", "remount,ro", "/sys"], check=True)


def _threaded(dev, value=None):
    path = "/sys/class/net/%s/threaded" % dev
    if value is not None:
        _write(path, value)
    with open(path) as handle:
        return int(handle.read().strip())


def _set_features(eth, dev, wanted):
    features = eth.get_features(dev)
    for name, enable in wanted.items():
        if name in features.features and features.features[name].available:
            features.features[name].enable = enable
    eth.set_features(dev, features)


def set_devices(devices):
    eth = Ethtool()
    original = {}
    for dev in devices:
        features = eth.get_features(dev).features
        original[dev] = {
            "features": {name: features[name].enable for name in ("rx-gro",) + TSO if name in features},
            "threaded": _threaded(dev),
        }
        wanted = {"rx-gro": True}
        wanted.update({name: False for name in TSO})
        _set_features(eth, dev, wanted)
        _threaded(dev, 1)
        now = eth.get_features(dev).features
        if not now["rx-gro"].enable or _threaded(dev) != 1:
            raise SystemExit("could not enable GRO and threaded NAPI on %s" % dev)
    return original


def restore(original):
    eth = Ethtool()
    for dev, saved in original.items():
        _threaded(dev, saved["threaded"])
        _set_features(eth, dev, saved["features"])


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "set":
        print(json.dumps(set_devices(sys.argv[2:])))
    elif len(sys.argv) == 3 and sys.argv[1] == "restore":
        restore(json.loads(sys.argv[2]))
    else:
        raise SystemExit(__doc__)
