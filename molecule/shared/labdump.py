"""Dumps of everything the collection can change on a lab host, for before/after comparisons.

One text per host: policy rules, every routing table, qdiscs and filters of every interface (all
hooks: root, ingress, egress), the whole nftables ruleset, the sysctls the methods touch, and the
checksums of the files the roles write (nginx configuration, systemd units, sysctl.d, local facts).
Two dumps of a host that nobody changed are identical; any rule, route, qdisc, table, sysctl or file a
role leaves behind makes them differ."""

import difflib
import json
import os
import re
import sys

from labcheck import lab_host

LAB_HOSTS = ["client", "lb", "router", "upstream1", "upstream2", "upstream3", "upstream4"]
if os.environ.get("LAB_VARIANT") == "ha":  # lab/topology.yml's HA variant: a pair of proxies in place of the single one
    LAB_HOSTS = [name for name in LAB_HOSTS if name != "lb"] + ["proxy1", "proxy2"]

DUMP_SCRIPT = r"""
set -u
echo '## ip -4 rule'; ip -4 rule show
echo '## ip -6 rule'; ip -6 rule show
echo '## ip -4 route table all'; ip -4 route show table all | sort
echo '## ip -6 route table all'; ip -6 route show table all | grep -v '^fe80::/64\|^local fe80::\|^multicast ff00::/8' | sort
echo '## tc qdisc'; tc qdisc show
for dev in $(ls /sys/class/net | sort); do
  for parent in '' ingress egress; do
    echo "## tc filter $dev $parent"; tc filter show dev "$dev" $parent 2>&1
  done
done
# Docker's embedded DNS rules get new random ports at every container start: the ports are masked.
echo '## nft ruleset'; nft -s list ruleset | sed -E '/127\.0\.0\.11/s/[0-9]{4,5}/PORT/g'
echo '## sysctl'
sysctl net.ipv4.ip_forward net.ipv4.udp_early_demux net.ipv4.conf.all.forwarding net.ipv4.ip_nonlocal_bind
for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo "$f $(cat $f)"; done
for f in /proc/sys/net/ipv6/conf/*/forwarding /proc/sys/net/ipv6/conf/*/accept_ra_defrtr /proc/sys/net/ipv6/conf/*/disable_ipv6; do
  echo "$f $(cat $f)"
done
echo '## health checker'; systemctl is-active netops-healthcheck.service 2>&1 || true
echo '## files'
find /etc/nginx /etc/keepalived /etc/systemd/system /etc/sysctl.d /etc/ansible/facts.d /etc/nftables.d /etc/netops* \
     /usr/local/lib/netops* /usr/local/libexec/netops* /var/lib/netops* \
     -xdev \( -type f -o -type l \) 2>/dev/null | sort | while read -r f; do
  if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; else sha256sum "$f"; fi
done
"""


def dump(name):
    """The state dump of one lab host (text), with interface names replaced by the IPv4 address they hold
    (the order docker attaches networks, hence eth0/eth1, may change when a container restarts) and its
    sections in a stable order."""
    host = lab_host(name)
    text = host.check_output("bash -c %s" % _quote(DUMP_SCRIPT))
    for line in host.check_output("ip -o -4 addr show").splitlines():
        fields = line.split()
        ifname, address = fields[1].split("@")[0], fields[3].split("/")[0]
        if ifname != "lo":
            text = re.sub(r"\b%s\b" % re.escape(ifname), "if[%s]" % address, text)
    sections = text.split("\n## ")
    head, rest = sections[0], sorted(sections[1:])
    rest = [_sorted_section(section) for section in rest]
    return "\n## ".join([head] + rest)


def _sorted_section(section):
    header, _sep, body = section.partition("\n")
    if header.startswith("sysctl"):
        body = "\n".join(sorted(body.splitlines()))
    return header + "\n" + body


def dump_all(hosts=None):
    return {name: dump(name) for name in (hosts or LAB_HOSTS)}


def differences(before, after):
    """Unified diffs of the hosts whose dumps differ, '' when every host is identical."""
    out = []
    for name in sorted(before):
        if before[name] != after.get(name):
            out.extend(
                difflib.unified_diff(
                    before[name].splitlines(), after.get(name, "").splitlines(),
                    "%s before" % name, "%s after" % name, lineterm="",
                )
            )
    return "\n".join(out)


def _quote(text):
    return "'" + text.replace("'", "'\"'\"'") + "'"


def save(path, hosts=None):
    """Dump every lab host (or ``hosts``) into ``path`` (JSON), for a later check to compare with: a scenario whose
    converge changes the lab saves its baseline in its prepare step (molecule/mixed/prepare.yml)."""
    dumps = dump_all(hosts)
    with open(path, "w") as out:
        json.dump(dumps, out, indent=1, sort_keys=True)
    return dumps


def load(path):
    """The dumps save() wrote into ``path``."""
    with open(path) as src:
        return json.load(src)


if __name__ == "__main__":
    # python3 molecule/shared/labdump.py FILE: the dumps of every lab host into FILE
    if len(sys.argv) != 2:
        sys.exit("usage: %s FILE (the dumps of every lab host, JSON)" % sys.argv[0])
    print("dumped %s into %s" % (", ".join(sorted(save(sys.argv[1]))), sys.argv[1]))
