# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Address and subnet helpers for the collection's roles.

The roles have to find interfaces from addresses (container and cloud interface names are not
stable), check that a gateway is on a directly connected subnet and that the client-facing and
private networks do not overlap. Jinja has no bitwise arithmetic and ansible.utils.ipaddr needs
netaddr on the controller, so these few filters use Python's ``ipaddress`` instead. Each filter is
documented in its own sidecar file, plugins/filter/<filter name>.yml.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress

from ansible.module_utils.six import string_types

from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _addresses
# IPv6 reverse-path filtering (firewall rules): the logic is shared with the troubleshoot role's checks
from ansible_collections.netops.ip_transparency.plugins.plugin_utils._rpfilter6 import rpfilter6_rules


def _addr(value):
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        return None


def _net(value):
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        return None


def ip_version(value):
    addr = _addr(value)
    return addr.version if addr else 0


def network_version(value):
    net = _net(value)
    return net.version if net else 0


def network_has_host_bits(value):
    """True for a valid prefix whose address has bits set beyond the prefix length (10.1.2.3/8)."""
    net = _net(value)
    if net is None:
        return False
    try:
        ipaddress.ip_network(str(value).strip(), strict=True)
    except ValueError:
        return True
    return False


def _interface_facts(facts):
    """Yield the per-interface fact dicts (keyed by a mangled name, found by their 'device')."""
    for value in (facts or {}).values():
        if isinstance(value, dict) and isinstance(value.get("device"), string_types) and (
            "ipv4" in value or "ipv6" in value or "type" in value
        ):
            yield value


def connected_addresses(facts):
    result = []
    for iface in _interface_facts(facts):
        name = iface["device"]
        entries = []
        if isinstance(iface.get("ipv4"), dict):
            entries.append(iface["ipv4"])
        entries.extend(e for e in iface.get("ipv4_secondaries") or [] if isinstance(e, dict))
        entries.extend(e for e in iface.get("ipv6") or [] if isinstance(e, dict))
        for entry in entries:
            address = entry.get("address")
            if not address:
                continue
            if "netmask" in entry:
                iface_net = ipaddress.ip_interface(u"%s/%s" % (address, entry["netmask"]))
            elif "prefix" in entry:
                iface_net = ipaddress.ip_interface(u"%s/%s" % (address, entry["prefix"]))
            else:
                continue
            if iface_net.is_loopback:
                continue
            result.append(
                {
                    "interface": name,
                    "address": str(iface_net.ip),
                    "prefix": iface_net.network.prefixlen,
                    "network": str(iface_net.network),
                    "version": iface_net.version,
                    "link_local": iface_net.ip.is_link_local,
                }
            )
    return sorted(result, key=lambda e: (e["interface"], e["version"], e["address"]))


def _connected(facts_or_list):
    if isinstance(facts_or_list, dict):
        return connected_addresses(facts_or_list)
    return list(facts_or_list or [])


def canonical_ip(value):
    """An address in its canonical spelling (a list: each of them); anything else unchanged."""
    if isinstance(value, (list, tuple)):
        return [_addresses.canonical_ip(v) for v in value]
    return _addresses.canonical_ip(value)


def _address_entries(facts_or_list):
    """Entries {interface, address, scope?} of every address: from gathered facts with their scope, else the list."""
    if not isinstance(facts_or_list, dict):
        return list(facts_or_list or [])
    entries = []
    for iface in _interface_facts(facts_or_list):
        for entry in iface.get("ipv6") or []:
            if isinstance(entry, dict) and entry.get("address"):
                entries.append(dict(entry, interface=iface["device"]))
    return entries


def public_ipv6(facts_or_list, interface):
    """The candidate public IPv6 addresses of ``interface`` (plugin_utils/_addresses.public_ipv6_candidates)."""
    return _addresses.public_ipv6_candidates(_address_entries(facts_or_list), interface)


def ra_routes_lost(routes, accept_ra):
    """The RA-learned default routes that turning IPv6 forwarding on would delete (plugin_utils/_addresses)."""
    return _addresses.ra_routes_lost_to_forwarding(routes, accept_ra)


def connected_interface(address, facts_or_list):
    """The interface whose connected (non link-local) subnet holds ``address``; the longest prefix wins."""
    addr = _addr(address)
    if addr is None:
        return ""
    best = None
    for entry in _connected(facts_or_list):
        if entry.get("link_local"):
            continue
        net = _net(entry["network"])
        if net is not None and net.version == addr.version and addr in net:
            if best is None or net.prefixlen > best[0]:
                best = (net.prefixlen, entry["interface"])
    return best[1] if best else ""


def in_networks(address, networks):
    addr = _addr(address)
    if addr is None:
        return False
    if isinstance(networks, string_types):
        networks = [networks]
    for network in networks or []:
        net = _net(network)
        if net is not None and net.version == addr.version and addr in net:
            return True
    return False


def overlapping_networks(networks_a, networks_b):
    if isinstance(networks_a, string_types):
        networks_a = [networks_a]
    if isinstance(networks_b, string_types):
        networks_b = [networks_b]
    pairs = []
    for a in networks_a or []:
        net_a = _net(a)
        for b in networks_b or []:
            net_b = _net(b)
            if net_a is None or net_b is None or net_a.version != net_b.version:
                continue
            if net_a.overlaps(net_b):
                pairs.append("%s overlaps %s" % (net_a, net_b))
    return pairs


class FilterModule(object):
    def filters(self):
        return {
            "ip_version": ip_version,
            "network_version": network_version,
            "network_has_host_bits": network_has_host_bits,
            "connected_addresses": connected_addresses,
            "connected_interface": connected_interface,
            "canonical_ip": canonical_ip,
            "public_ipv6": public_ipv6,
            "ra_routes_lost": ra_routes_lost,
            "in_networks": in_networks,
            "overlapping_networks": overlapping_networks,
            "rpfilter6_rules": rpfilter6_rules,
        }
