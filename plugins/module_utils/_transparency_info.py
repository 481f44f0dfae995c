# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""Read-only snapshot of the kernel and nginx state the transparent proxy methods depend on.

Everything is read through the collection's own readers (ip_rule, policy_route, rp_filter,
_nat.tc_backend / _nat.nft_backend, _nat.kernel.act_nat_support), so the troubleshooter
sees the kernel exactly as the modules that change it do. Nothing here writes anything; the
result is plain data (strings, ints, lists, dicts) for troubleshoot.diagnose on the controller.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import ipaddress
import json
import os
import re

from ansible_collections.netops.ip_transparency.plugins.module_utils import _ip_rule as ip_rule, _policy_route as policy_route
from ansible_collections.netops.ip_transparency.plugins.module_utils import _rp_filter as rpf
from ansible_collections.netops.ip_transparency.plugins.module_utils._common import NetlinkError, ReadError, interface_names
from ansible_collections.netops.ip_transparency.plugins.module_utils._netlink import attr, parse_table
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat.kernel import act_nat_support
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat.nft_backend import NftBackend
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat.tc_backend import TcBackend

AF_INET, AF_INET6 = 2, 10
AF_BY_VERSION = {4: AF_INET, 6: AF_INET6}
CAP_NET_RAW = 13
NGINX_ERROR_LOG = "/var/log/nginx/error.log"
HEALTHCHECK_STATE = "/var/lib/netops-healthcheck/state.json"
ERROR_LOG_TAIL = 65536
PROCESS_GONE = (errno.ENOENT, errno.ESRCH)
TRANSPARENT_ERRORS = re.compile(r"IP_TRANSPARENT|IP_BIND_ADDRESS_NO_PORT|transparent", re.I)


def _read(path, default=None, absent=(errno.ENOENT,)):
    """The text of ``path``; ``default`` when it does not exist. Any other failure is a ReadError with its cause:
    a file that is there but cannot be read says nothing about the value it holds."""
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError) as exc:
        if getattr(exc, "errno", None) in absent:
            return default
        raise ReadError("cannot read %s: %s" % (path, exc))


def addresses(ipr):
    """Every address of the host, the IPv4 ones first, then the IPv6 ones: [{interface, address, prefix, network}]."""
    names = interface_names(ipr)
    found = []
    for family in (AF_INET, AF_INET6):
        for msg in ipr.get_addr(family=family):
            address = attr(msg, "IFA_LOCAL") or attr(msg, "IFA_ADDRESS")
            if address is None:
                continue
            network = ipaddress.ip_interface("%s/%d" % (address, msg["prefixlen"])).network
            found.append({"interface": names.get(msg["index"], "if%d" % msg["index"]), "address": address,
                          "prefix": msg["prefixlen"], "network": str(network)})
    return found


def links(ipr):
    """name -> {up: bool (IFF_UP), operstate}."""
    result = {}
    for link in ipr.get_links():
        result[link.get_attr("IFLA_IFNAME")] = {"up": bool(link["flags"] & 1), "operstate": link.get_attr("IFLA_OPERSTATE")}
    return result


def rules(ipr, family=4):
    """The policy routing rules of one family (4 or 6), in priority order, as data and as ``ip rule`` lines, with their
    ``ipproto`` (by name where known) and ``sport`` ([start, end]): the selectors of a rule routing a service's replies
    by source port (``ip rule ... ipproto tcp sport 80``)."""
    found = []
    for msg in ipr.get_rules(family=AF_BY_VERSION[family]):
        r = ip_rule.from_netlink(msg)
        if r.family != family:
            continue
        found.append({"line": r.render(), "priority": r.priority, "fwmark": r.fwmark, "fwmask": r.fwmask, "table": r.table,
                      "action": r.action,
                      "selectors": bool(r.src or r.dst or r.iif or r.oif or r.foreign or r.has_l4_selectors()),
                      "ipproto": None if r.ipproto is None else ip_rule.protocol_name(r.ipproto),
                      "sport": None if r.sport is None else list(r.sport)})
    return found


def _route_dict(route):
    data = route.as_params()
    data["line"] = route.render()
    return data


def routes(ipr, tables, family=4):
    """table name/number -> its routes of one family (data plus ``ip route`` lines)."""
    return dict((str(table), [_route_dict(r) for r in policy_route.read_routes(ipr, family, parse_table(table))]) for table in tables)


def route_get(ipr, destinations):
    """address -> the kernel's route to it (``ip route get``): type, gateway, device, source, or error."""
    names = interface_names(ipr)
    result = {}
    for dest in destinations:
        try:
            msgs = ipr.route("get", dst=str(dest))
        except NetlinkError as exc:
            result[str(dest)] = {"error": "%s" % (exc.args[1] if len(exc.args) > 1 else exc)}
            continue
        route = policy_route.from_netlink(msgs[0], names)
        result[str(dest)] = {"type": route.type, "gateway": None if route.gateway is None else str(route.gateway),
                             "device": route.device, "source": None if route.source is None else str(route.source),
                             "table": route.table}
    return result


def sysctls(root="/proc/sys/net/ipv4", root6="/proc/sys/net/ipv6"):
    """ip_forward, udp_early_demux and rp_filter per interface (configured and effective, max(all, iface)), and
    ``ipv6_forwarding`` (net.ipv6.conf.all.forwarding; None on a kernel without IPv6). IPv6 has no early demux sysctl
    of its own (the IPv4 one covers it) and no rp_filter."""
    current = rpf.Sysctl(os.path.join(root, "conf")).read_all()
    values = dict((iface, {"configured": rpf.NAMES.get(value, str(value)), "effective": rpf.NAMES.get(rpf.effective(current, iface), "?")})
                  for iface, value in current.items())
    return {"ip_forward": _read(os.path.join(root, "ip_forward")), "udp_early_demux": _read(os.path.join(root, "udp_early_demux")),
            "rp_filter": values, "ipv6_forwarding": _read(os.path.join(root6, "conf", "all", "forwarding"))}


def nat_rules(ipr, devices):
    """device -> the stateless NAT rules on it, per backend, as tc_nat_filter reads them."""
    result = {}
    for device in devices:
        found = ipr.link_lookup(ifname=device)
        if not found:
            continue
        entry = {}
        try:
            entry["tc"] = [rule.as_dict() for rule in TcBackend(ipr, device, found[0]).read().rules]
        except Exception as exc:  # reading must never stop the report: say what failed instead
            entry["tc"] = []
            entry["tc_error"] = str(exc)
        try:
            nft = NftBackend(device).read()
        except Exception as exc:  # as above: a failed read is reported, not taken for "no rules"
            entry["nftables"] = []
            entry["nftables_error"] = str(exc)
        else:
            entry["nftables"] = [rule.as_dict() for rule in nft.rules]
            if nft.problems:
                entry["nftables_problems"] = list(nft.problems)
        result[device] = entry
    return result


def nginx_processes(proc="/proc"):
    """nginx master/worker processes: pid, role, uid, whether CAP_NET_RAW is effective."""
    found = []
    for pid in sorted((p for p in os.listdir(proc) if p.isdigit()), key=int):
        # a process that exits while it is read: its directory is gone (ENOENT) or its files answer ESRCH
        cmdline = _read(os.path.join(proc, pid, "cmdline"), "", PROCESS_GONE) or ""
        cmdline = cmdline.replace("\0", " ").strip()
        if not cmdline.startswith("nginx:"):
            continue
        status = _read(os.path.join(proc, pid, "status"), "", PROCESS_GONE) or ""
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = int(fields.get("Uid", "-1").split()[1]) if fields.get("Uid") else -1
        cap_eff = int(fields.get("CapEff", "0").strip() or "0", 16)
        found.append({"pid": int(pid), "role": "master" if "master process" in cmdline else "worker" if "worker process" in cmdline else "other",
                      "uid": uid, "net_raw": bool(cap_eff & (1 << CAP_NET_RAW)) or uid == 0, "cmdline": cmdline})
    return found


def error_log_tail(path=NGINX_ERROR_LOG, size=ERROR_LOG_TAIL, keep=5):
    """The last ``keep`` lines of nginx's error log about transparent binding (bounded read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            text = handle.read().decode("utf-8", "replace")
    except (IOError, OSError) as exc:
        if getattr(exc, "errno", None) == errno.ENOENT:
            return []  # no log: nothing was logged
        raise ReadError("cannot read %s: %s" % (path, exc))
    return [line for line in text.splitlines() if TRANSPARENT_ERRORS.search(line)][-keep:]


def healthcheck_state(path=HEALTHCHECK_STATE):
    """The active health checker's state file: {"present": False} when there is none (no checker on this host),
    else {"present": True, "state": {...}} or {"present": True, "error": "..."} when it cannot be read."""
    try:
        with open(path) as handle:
            return {"present": True, "path": path, "state": json.load(handle)}
    except (IOError, OSError) as exc:
        if getattr(exc, "errno", None) == errno.ENOENT:
            return {"present": False, "path": path}
        return {"present": True, "path": path, "error": "cannot read %s: %s" % (path, exc)}
    except ValueError as exc:
        return {"present": True, "path": path, "error": "%s is not JSON: %s" % (path, exc)}


def gather(ipr, run_command, tables=("main",), destinations=(), nginx=False):
    """The whole snapshot. ``run_command(argv) -> (rc, out, err)`` runs read-only commands (nft, nginx -T)."""
    addrs = addresses(ipr)
    link_state = links(ipr)
    devices = sorted(name for name in link_state if name != "lo")
    act_nat, act_nat_how = act_nat_support()
    rc, ruleset, err = run_command(["nft", "list", "ruleset"])
    facts = {
        "kernel": os.uname()[2],
        "addresses": addrs,
        "links": link_state,
        "rules": rules(ipr),
        "routes": routes(ipr, tables),
        "rules6": rules(ipr, 6),
        "routes6": routes(ipr, tables, 6),
        "route_get": route_get(ipr, destinations),
        "sysctl": sysctls(),
        "nat": nat_rules(ipr, devices),
        "act_nat": {"available": act_nat, "how": act_nat_how},
        "nft_ruleset": ruleset.splitlines() if rc == 0 else [],
        "nft_error": "" if rc == 0 else (err or "").strip(),
    }
    if nginx:
        rc, out, err = run_command(["nginx", "-T"])
        facts["nginx"] = {"rc": rc, "config": out, "test": (err or "").strip().splitlines()[-3:],
                          "processes": nginx_processes(), "error_log": error_log_tail()}
        facts["health"] = healthcheck_state()
    return facts
