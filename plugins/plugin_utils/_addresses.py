# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Address decisions shared by the roles' filters (plugins/filter/network.py) and the troubleshoot checks
(plugins/plugin_utils/_checks.py), so that both answer the same question the same way: pure functions of plain
data (no Ansible, no host access).

An entry is a mapping with ``interface`` and ``address``, as connected_addresses returns them and as troubleshoot's
facts list a host's addresses. Optional keys are honoured when present: ``scope`` (``ip addr``'s: only ``global``
is a candidate), ``link_local``, ``temporary`` (true) and ``flags`` (``ip -j addr``'s list: ``temporary``,
``deprecated``, ``tentative``, ``dadfailed`` addresses are no candidates).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re

_UNUSABLE_FLAGS = ("temporary", "deprecated", "tentative", "dadfailed")


def _address(value):
    try:
        return ipaddress.ip_address(u"%s" % (str(value).strip(),))
    except ValueError:
        return None


def canonical_ip(value):
    """The canonical spelling of an IP address (``fd00:16:0::11`` is ``fd00:16::11``, ``FD00::1`` is ``fd00::1``), so
    that addresses compare as addresses; anything that is not an address comes back unchanged (for a check to name)."""
    if isinstance(value, bool) or not isinstance(value, str):
        return value
    found = _address(value)
    return str(found) if found is not None else value


def public_ipv6_candidates(entries, interface):
    """The IPv6 addresses of ``interface`` a host can answer its clients from: global scope (global and unique local
    addresses; not link-local, loopback, multicast), not temporary, deprecated, tentative or failed, each once in its
    canonical spelling, in numeric order (stable whatever order the facts list them in)."""
    found = set()
    for entry in entries or []:
        if not isinstance(entry, dict) or entry.get("interface") != interface:
            continue
        addr = _address(entry.get("address", ""))
        if addr is None or addr.version != 6 or addr.is_link_local or addr.is_loopback or addr.is_multicast or addr.is_unspecified:
            continue
        if entry.get("link_local") or entry.get("scope") not in (None, "global", "universe") or entry.get("temporary") is True:
            continue
        flags = entry.get("flags") or []
        if any(flag in flags for flag in _UNUSABLE_FLAGS):
            continue
        found.add(addr)
    return [str(addr) for addr in sorted(found)]


def choose_public_ipv6(entries, interface, given=""):
    """(address, candidates): the given address (canonical) when there is one; else the interface's only candidate;
    else '' -- with several candidates the caller must refuse and ask for the address, never guess one."""
    candidates = public_ipv6_candidates(entries, interface)
    if given:
        return canonical_ip(given), candidates
    return (candidates[0] if len(candidates) == 1 else ""), candidates


_DEV = re.compile(r"(?:^|\s)dev\s+(\S+)")


def ra_routes_lost_to_forwarding(routes, accept_ra):
    """The default routes learned from router advertisements that turning IPv6 forwarding on would delete at once.

    Writing net.ipv6.conf.all.forwarding=1 runs the kernel's rt6_purge_dflt_routers: every RA-learned default route
    of a device whose accept_ra is not 2 goes, on every interface. ``routes`` is ``ip -o -6 route show default proto
    ra`` (a string or its lines; a multipath route names each nexthop's device), ``accept_ra`` maps a device to its
    accept_ra. One {device, accept_ra, route, summary, sysctl (the fix)} per route and device at risk, in the order of
    the routes."""
    if isinstance(routes, str):
        routes = routes.splitlines()
    lost = []
    for line in routes or []:
        line = " ".join(str(line).replace("\\", " ").split())
        if not line:
            continue
        for device in sorted(set(_DEV.findall(line))):
            value = str((accept_ra or {}).get(device, "")).strip()
            if value != "2":
                lost.append({"device": device, "accept_ra": value or "?", "route": line,
                             "summary": "interface %s (accept_ra %s: %s)" % (device, value or "?", line),
                             # sysctl's dotted name writes a dot in a device name (eth0.100) as a slash
                             "sysctl": "net.ipv6.conf.%s.accept_ra = 2" % device.replace(".", "/")})
    return lost
