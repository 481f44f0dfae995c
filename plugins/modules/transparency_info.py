#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: transparency_info
short_description: Read the kernel and nginx state transparent proxying and DSR depend on (read-only)
version_added: "0.1.0"
description:
  - Returns, without changing anything, what the troubleshooting role (netops.ip_transparency.troubleshoot)
    diagnoses - IPv4 and IPv6 addresses and links, policy routing rules and the routes of the tables asked for (each
    family apart), the kernel's route to given addresses of either family (C(ip route get)), C(ip_forward),
    C(udp_early_demux), C(net.ipv6.conf.all.forwarding), configured and effective
    reverse-path filtering per interface, the stateless NAT rules of both tc_nat_filter backends on every device,
    whether the kernel has the tc C(nat) action, the nftables ruleset and, optionally, nginx's configuration
    (C(nginx -T)), its processes' privileges and its error log lines about transparent binding.
  - Reads through the same code as the ip_rule, policy_route, rp_filter and tc_nat_filter modules.
extends_documentation_fragment:
  - netops.ip_transparency.common.info
  - netops.ip_transparency.common
  - netops.ip_transparency.pyroute2
options:
  tables:
    description: Routing tables to list (names or numbers).
    type: list
    elements: raw
    default: [main]
  destinations:
    description: Addresses to ask the kernel's route for (like C(ip route get ADDRESS)).
    type: list
    elements: str
    default: []
  nginx:
    description: Also read nginx's configuration, its processes' privileges, its error log and the active health checker's state.
    type: bool
    default: false
requirements:
  - nft (optional - the ruleset and the nftables NAT backend)
"""

EXAMPLES = r"""
- name: Snapshot of the proxy's state
  netops.ip_transparency.transparency_info:
    tables: [main, 100]
    destinations: [172.16.0.11, 192.168.99.1]
    nginx: true
  register: snapshot

- name: Show the effective reverse-path filtering per interface
  ansible.builtin.debug:
    msg: "{{ snapshot.transparency.sysctl.rp_filter }}"
"""

RETURN = r"""
transparency:
  description: The snapshot.
  returned: always
  type: dict
  contains:
    addresses:
      description: Addresses (interface, address, prefix, network), the IPv4 ones first, then the IPv6 ones (link-local included).
      type: list
      elements: dict
    rules:
      description:
        - IPv4 policy routing rules (line, priority, fwmark, fwmask, table, action, selectors).
        - C(ipproto) (C(tcp), C(udp) or the protocol number) and C(sport) (C([start, end])) of a rule selecting by
          protocol and source port, else null.
      type: list
      elements: dict
    routes:
      description: Table -> IPv4 routes (line and the policy_route options).
      type: dict
    rules6:
      description: The IPv6 policy routing rules (C(ip -6 rule)), as C(rules).
      type: list
      elements: dict
    routes6:
      description: Table -> IPv6 routes (C(ip -6 route show table)), as C(routes).
      type: dict
    route_get:
      description: Address -> the kernel's route to it (type, gateway, device, source) or error.
      type: dict
    sysctl:
      description:
        - ip_forward, udp_early_demux, rp_filter (interface -> configured, effective), ipv6_forwarding
          (net.ipv6.conf.all.forwarding, null on a kernel without IPv6).
        - IPv6 has no early demux setting of its own (the IPv4 one covers it) and no rp_filter.
      type: dict
    nat:
      description: Device -> stateless NAT rules per backend (tc, nftables), as tc_nat_filter reads them.
      type: dict
    act_nat:
      description: Whether the kernel has the tc nat action, and how that is known.
      type: dict
    nginx:
      description: With O(nginx) - rc and output of C(nginx -T), processes (role, uid, net_raw), error log lines.
      type: dict
    health:
      description:
        - With O(nginx) - the active health checker's state file (C(/var/lib/netops-healthcheck/state.json)) -
          C(present) false when the host runs no checker, else C(state) (per service, per upstream - C(state) up or
          down, C(since), C(last_error), C(fail_open)...) or C(error) when it cannot be read.
      type: dict
  sample: {"sysctl": {"ip_forward": "1", "rp_filter": {"eth1": {"configured": "strict", "effective": "strict"}}}}
"""

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import IPRoute
from ansible_collections.netops.ip_transparency.plugins.module_utils._module import run_module
from ansible_collections.netops.ip_transparency.plugins.module_utils._transparency_info import gather


def snapshot(module, ipr):
    def run_command(argv):
        path = module.get_bin_path(argv[0], opt_dirs=["/usr/sbin", "/sbin"])
        if path is None:
            return 127, "", "%s: command not found" % argv[0]
        # their output and errors are parsed: in the C locale, whatever the host's
        return module.run_command([path] + argv[1:], environ_update={"LC_ALL": "C"})

    facts = gather(ipr, run_command, tables=module.params["tables"], destinations=module.params["destinations"],
                   nginx=module.params["nginx"])
    return {"changed": False, "transparency": facts}


def main():
    run_module(
        dict(
            tables=dict(type="list", elements="raw", default=["main"]),
            destinations=dict(type="list", elements="str", default=[]),
            nginx=dict(type="bool", default=False),
        ),
        snapshot,
        opened=IPRoute,
    )


if __name__ == "__main__":
    main()
