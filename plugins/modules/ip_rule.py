#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ip_rule
short_description: Manage Linux policy routing rules (ip rule) over netlink
version_added: "0.1.0"
description:
  - Adds or removes one policy routing rule, as C(ip rule add) and C(ip rule del) do, through netlink (pyroute2).
  - The rule's identity is every selector given (O(from), O(to), O(fwmark)/O(fwmask), O(iif), O(oif), O(ipproto),
    O(sport), O(dport)), its O(action)
    and O(table), and its O(priority) when given. A rule that is already there with exactly that identity is left alone.
  - With O(state=absent) only rules that match that identity exactly are removed; rules with more or other selectors
    are never touched. The kernel's default rules (V(0) lookup local, V(32766) lookup main, V(32767) lookup default)
    are only removed when O(priority) names them.
  - Addresses are compared after normalisation, so C(172.16.0.11) equals C(172.16.0.11/32), O(fwmark) C(0x1) equals
    C(1) and O(table) C(main) equals C(254).
  - A proxy that serves one service by IP transparency and another by DSR needs the upstreams to route the replies
    of one service back through the proxy and the others by their normal default route; that is a rule selecting the
    reply by its source port, C(ip rule add ipproto tcp sport 80 lookup 101), that is O(ipproto=tcp), O(sport=80),
    O(table=101).
  - The IP transparency setup of NGINX needs C(ip rule add fwmark 1 lookup 100), that is
    O(fwmark=1), O(table=100) (with a fixed O(priority) so the rule is easy to find again).
extends_documentation_fragment:
  - netops.ip_transparency.common
  - netops.ip_transparency.pyroute2
attributes:
  diff_mode:
    description: Shows the rules of the family before and after, one C(ip rule)-like line each.
options:
  priority:
    description:
      - The rule's priority (C(ip rule ... priority N)), 0 to 4294967295; lower runs first.
      - Part of the identity when given. Without it a rule is added with priority V(32000), and a rule of any
        priority matches when checking or removing.
    type: int
  family:
    description:
      - Address family of the rule.
      - Defaults to the family of O(from)/O(to), else V(ipv4).
    type: str
    choices: [ipv4, ipv6]
  from:
    description:
      - Source prefix selector (C(ip rule ... from PREFIX)). An address means a host prefix; host bits set in a
        prefix are refused. V(all) or no value means any source.
      - A zero-length prefix (V(0.0.0.0/0), V(::/0)) also means any source, as the kernel keeps no such selector;
        it still sets the family.
    type: str
  to:
    description:
      - Destination prefix selector (C(ip rule ... to PREFIX)), as O(from).
    type: str
  fwmark:
    description:
      - Firewall mark selector, a number 0 to 4294967295 (decimal or a C(0x) string).
    type: raw
  fwmask:
    description:
      - Mask for O(fwmark). Needs O(fwmark). Defaults to C(0xffffffff) when O(fwmark) is given.
    type: raw
  iif:
    description:
      - Incoming device selector. The device must exist when the rule is added.
    type: str
  oif:
    description:
      - Outgoing device selector. The device must exist when the rule is added.
    type: str
  ipproto:
    description:
      - IP protocol selector (C(ip rule ... ipproto PROTO)) - a name (V(tcp), V(udp), V(sctp), V(dccp), V(icmp),
        V(ipv6-icmp), or one from C(/etc/protocols)) or a number 0 to 255. Compared as its number, so V(tcp) equals V(6).
      - Needs Linux 4.17 or later, as do O(sport) and O(dport); an older kernel is refused with an error naming its release.
    type: raw
    version_added: "0.1.0"
  sport:
    description:
      - Source port selector (C(ip rule ... sport PORT)) - a port 1 to 65534 or a range V(LO-HI) (LO not above HI); the kernel refuses port 65535 in a rule.
        V(80) equals V(80-80).
      - Needs O(ipproto) V(tcp), V(udp), V(sctp) or V(dccp).
    type: raw
    version_added: "0.1.0"
  dport:
    description:
      - Destination port selector (C(ip rule ... dport PORT)), as O(sport).
    type: raw
    version_added: "0.1.0"
  table:
    description:
      - Routing table to look up, a number 1 to 4294967295 or a name (V(main), V(local), V(default), or one from
        C(/etc/iproute2/rt_tables)).
      - Only with O(action=lookup), where it defaults to V(main).
    type: raw
  action:
    description:
      - What the rule does - look up O(table), or drop the packet (V(blackhole)), or answer with an ICMP error
        (V(unreachable), V(prohibit)).
    type: str
    choices: [lookup, blackhole, unreachable, prohibit]
    default: lookup
  state:
    description:
      - Whether the rule should be there.
    type: str
    choices: [present, absent]
    default: present
notes:
  - Rules are not persistent; run the module at boot (or from a role's handler) to restore them.
seealso:
  - module: netops.ip_transparency.policy_route
"""

EXAMPLES = r"""
- name: Deliver packets marked 1 through table 100 (ip rule add fwmark 1 lookup 100)
  netops.ip_transparency.ip_rule:
    priority: 100
    fwmark: 1
    table: 100

- name: The same for IPv6
  netops.ip_transparency.ip_rule:
    family: ipv6
    priority: 100
    fwmark: "0x1"
    table: 100

- name: Route one upstream network through its own table
  netops.ip_transparency.ip_rule:
    priority: 200
    from: 172.16.0.0/28
    iif: eth2
    table: 200

- name: Send the replies of a local TCP service on port 80 through table 101 (ip rule add ipproto tcp sport 80 lookup 101)
  netops.ip_transparency.ip_rule:
    priority: 1000
    ipproto: tcp
    sport: 80
    table: 101

- name: The same for IPv6 DNS replies, and a destination port range
  netops.ip_transparency.ip_rule:
    family: ipv6
    priority: 1001
    ipproto: udp
    sport: 53
    dport: 1024-65534
    table: 101

- name: Remove the fwmark rule again
  netops.ip_transparency.ip_rule:
    priority: 100
    fwmark: 1
    table: 100
    state: absent
"""

RETURN = r"""
rules:
  description: Every rule of the family after the run, one C(ip rule)-like line each.
  returned: always
  type: list
  elements: str
  sample: ["0: from all lookup local", "100: from all fwmark 0x1 lookup 100", "1000: from all ipproto tcp sport 80 lookup 101",
           "32766: from all lookup main"]
added:
  description:
    - The rules added, as module options (with the priority the kernel gave them).
    - C(ipproto) is the protocol's name where known, else its number; C(sport)/C(dport) are a port number, or a
      C(LO-HI) string for a range.
  returned: always
  type: list
  elements: dict
  sample: [{"family": "ipv4", "priority": 100, "from": null, "to": null, "fwmark": 1, "fwmask": 4294967295,
            "iif": null, "oif": null, "ipproto": null, "sport": null, "dport": null, "table": 100, "action": "lookup"}]
removed:
  description: The rules removed, as module options.
  returned: always
  type: list
  elements: dict
  sample: []
"""

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import IPRoute
from ansible_collections.netops.ip_transparency.plugins.module_utils._ip_rule import ensure
from ansible_collections.netops.ip_transparency.plugins.module_utils._module import run_module


def main():
    run_module(
        dict(
            priority=dict(type="int"),
            family=dict(type="str", choices=["ipv4", "ipv6"]),
            to=dict(type="str"),
            fwmark=dict(type="raw"),
            fwmask=dict(type="raw"),
            iif=dict(type="str"),
            oif=dict(type="str"),
            ipproto=dict(type="raw"),
            sport=dict(type="raw"),
            dport=dict(type="raw"),
            table=dict(type="raw"),
            action=dict(type="str", default="lookup", choices=["lookup", "blackhole", "unreachable", "prohibit"]),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            **{"from": dict(type="str")}
        ),
        lambda module, ipr: ensure(ipr, module.params, check_mode=module.check_mode),
        opened=IPRoute,
    )


if __name__ == "__main__":
    main()
