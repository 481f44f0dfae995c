#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: policy_route
short_description: Manage Linux routes in any routing table over netlink
version_added: "0.1.0"
description:
  - Adds, replaces or removes one route in any routing table, as C(ip route replace) and C(ip route del) do,
    through netlink (pyroute2). IPv4 and IPv6.
  - A route's identity is what the kernel keys it by - family, O(table), O(dest) and O(metric). A route with that
    identity but another O(type), O(gateway), O(device) or O(source) is replaced.
  - O(exclusive=true) also removes every other route to O(dest) in O(table) (other metrics and types), as the
    upstream servers of a transparent NGINX proxy need when their default route is moved to the proxy. The routes
    removed are returned in RV(removed), as module options, so a role can put them back on teardown.
  - Addresses are compared after normalisation, so C(172.16.0.11) equals C(172.16.0.11/32) and O(table) C(main)
    equals C(254).
extends_documentation_fragment:
  - netops.ip_transparency.common
  - netops.ip_transparency.pyroute2
attributes:
  diff_mode:
    description: Shows the routes to O(dest) in O(table) before and after, one C(ip route)-like line each.
options:
  dest:
    description:
      - Destination prefix, an address (a host route), or V(default) (C(0.0.0.0/0) or C(::/0) by family).
      - Host bits set in a prefix are refused.
    type: str
    required: true
  type:
    description:
      - Route type. V(local) delivers to the host itself (C(ip route add local 0.0.0.0/0 dev lo table 100)
        is what transparent proxying needs); V(blackhole), V(unreachable), V(prohibit) and V(throw) have no next hop.
      - With O(state=absent) only routes of this type are removed.
    type: str
    choices: [unicast, local, blackhole, unreachable, prohibit, throw]
    default: unicast
  gateway:
    description:
      - Next hop address (C(via)). Only for V(unicast) routes; same family as O(dest).
    type: str
  device:
    description:
      - Output device (C(dev)). Must exist when the route is added.
      - A V(unicast) route needs O(gateway) or O(device). When only O(gateway) is given the kernel picks the device
        and any device matches.
    type: str
  source:
    description:
      - Preferred source address (C(src)). Not compared when not given.
    type: str
  table:
    description:
      - Routing table, a number 1 to 4294967295 or a name (V(main), V(local), V(default), or one from
        C(/etc/iproute2/rt_tables)).
    type: raw
    default: main
  metric:
    description:
      - Route metric (C(metric), also called preference or priority), 0 to 4294967295. Part of the identity.
      - Defaults to V(0) for IPv4 and V(1024) for IPv6 (the kernel stores IPv6 metric 0 as 1024).
    type: int
  family:
    description:
      - Address family. Defaults to the family of O(dest)/O(gateway)/O(source), else V(ipv4) (for O(dest=default)).
    type: str
    choices: [ipv4, ipv6]
  exclusive:
    description:
      - Also remove every other route to O(dest) in O(table), whatever its metric or type. Ignored with O(state=absent).
      - The new route is in place before the others go, so a default route is never missing.
    type: bool
    default: false
  state:
    description:
      - Whether the route should be there. With V(absent), a route with the identity, the O(type) and the given
        O(gateway)/O(device)/O(source) is removed.
    type: str
    choices: [present, absent]
    default: present
notes:
  - Routes are not persistent; run the module at boot (or from a role's handler) to restore them.
  - Changes are transactional - when a later kernel change fails, the earlier ones are undone and the module fails
    with C(rolled_back=true).
seealso:
  - module: netops.ip_transparency.ip_rule
"""

EXAMPLES = r"""
- name: Deliver every packet routed through table 100 locally (ip route add local 0.0.0.0/0 dev lo table 100)
  netops.ip_transparency.policy_route:
    dest: 0.0.0.0/0
    type: local
    device: lo
    table: 100

- name: The same for IPv6
  netops.ip_transparency.policy_route:
    dest: ::/0
    type: local
    device: lo
    table: 100

- name: On an upstream server, send replies through the proxy (and drop the other default routes)
  netops.ip_transparency.policy_route:
    dest: default
    gateway: 172.16.0.1
    exclusive: true
  register: upstream_default

- name: On teardown, remove it and put the old default routes back
  netops.ip_transparency.policy_route:
    dest: default
    gateway: 172.16.0.1
    state: absent

- name: Restore the routes the exclusive run removed
  netops.ip_transparency.policy_route: "{{ item }}"
  loop: "{{ upstream_default.removed }}"
"""

RETURN = r"""
route:
  description: The managed route after the run, as module options; null with O(state=absent).
  returned: always
  type: dict
  sample: {"family": "ipv4", "table": 100, "dest": "0.0.0.0/0", "type": "local", "gateway": null, "device": "lo",
           "source": null, "metric": 0}
routes:
  description: Every route to O(dest) in O(table) after the run, one C(ip route)-like line each.
  returned: always
  type: list
  elements: str
  sample: ["local default dev lo table 100 scope host"]
added:
  description: The routes added (or replacing another), as module options.
  returned: always
  type: list
  elements: dict
  sample: []
removed:
  description: The routes removed or replaced, including those removed by O(exclusive), as module options.
  returned: always
  type: list
  elements: dict
  sample: [{"family": "ipv4", "table": 254, "dest": "0.0.0.0/0", "type": "unicast", "gateway": "10.0.2.2",
            "device": "eth0", "source": null, "metric": 0}]
"""

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import IPRoute
from ansible_collections.netops.ip_transparency.plugins.module_utils._module import run_module
from ansible_collections.netops.ip_transparency.plugins.module_utils._policy_route import ensure


def main():
    run_module(
        dict(
            dest=dict(type="str", required=True),
            type=dict(type="str", default="unicast", choices=["unicast", "local", "blackhole", "unreachable", "prohibit", "throw"]),
            gateway=dict(type="str"),
            device=dict(type="str"),
            source=dict(type="str"),
            table=dict(type="raw", default="main"),
            metric=dict(type="int"),
            family=dict(type="str", choices=["ipv4", "ipv6"]),
            exclusive=dict(type="bool", default=False),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        lambda module, ipr: ensure(ipr, module.params, check_mode=module.check_mode),
        opened=IPRoute,
    )


if __name__ == "__main__":
    main()
