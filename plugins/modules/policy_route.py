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
    identity but another O(type), O(gateway), O(device), O(nexthops), O(source), O(proto) or O(onlink) is replaced,
    unless O(append=true) adds the route next to it (C(ip route append)).
  - O(exclusive=true) also removes every other route to O(dest) in O(table) (other metrics and types), as the
    upstream servers of a transparent NGINX proxy need when their default route is moved to the proxy. The routes
    removed are returned in RV(removed), as module options (multipath routes with O(nexthops), with their O(proto)
    and O(onlink)), so a role can put them back on teardown exactly as they were.
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
      - Mutually exclusive with O(nexthops).
    type: str
  nexthops:
    description:
      - The next hops of a multipath (ECMP) route, as C(ip route add ... nexthop via A dev X weight 1 nexthop via B
        dev Y weight 2). Two or more; a single next hop is a plain route (O(gateway), O(device)). Only for V(unicast)
        routes.
      - Mutually exclusive with O(gateway), O(device) and O(onlink). The hops are compared in order.
    type: list
    elements: dict
    suboptions:
      gateway:
        description:
          - Next hop address (C(via)); same family as O(dest).
        type: str
      device:
        description:
          - Output device (C(dev)) of this hop. Must exist when the route is added. Not compared when not given.
          - A hop needs O(nexthops[].gateway) or O(nexthops[].device).
        type: str
      weight:
        description:
          - Relative weight of this hop (C(weight)), 1 to 256.
        type: int
        default: 1
      onlink:
        description:
          - Take the gateway as directly on the hop's link even when no subnet of the link holds it (C(onlink)).
            Needs O(nexthops[].gateway) and O(nexthops[].device).
        type: bool
        default: false
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
  proto:
    description:
      - Routing protocol the route is marked with (C(proto)), a number 0 to 255 or a name (V(boot), V(static),
        V(kernel), V(dhcp), V(ra), ... or one from C(/etc/iproute2/rt_protos)).
      - Not compared when not given; a route added without it gets V(boot), as with C(ip route add).
    type: raw
  onlink:
    description:
      - Take O(gateway) as directly on the link of O(device) even when no subnet of that link holds it (C(onlink)).
        V(true) needs O(gateway) and O(device).
      - Not compared when not given; a route added without it has no C(onlink) flag.
    type: bool
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
  append:
    description:
      - Add the route next to the routes of the same identity (family, O(table), O(dest), O(metric)) instead of
        replacing them, as C(ip route append) does (C(NLM_F_APPEND)). A route of that identity that differs stays;
        nothing is added when an identical route is already there.
      - Mutually exclusive with O(exclusive). Ignored with O(state=absent).
    type: bool
    default: false
  state:
    description:
      - Whether the route should be there. With V(absent), a route with the identity, the O(type) and the given
        O(gateway)/O(device)/O(nexthops)/O(source)/O(proto)/O(onlink) is removed.
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

- name: A multipath (ECMP) default route over two uplinks, the second twice as loaded, marked proto static
  netops.ip_transparency.policy_route:
    dest: default
    nexthops:
      - gateway: 10.0.2.2
        device: eth1
      - gateway: 10.0.3.2
        device: eth2
        weight: 2
    proto: static

- name: A default route to a gateway outside the link's subnets (ip route add default via 192.0.2.1 dev eth0 onlink)
  netops.ip_transparency.policy_route:
    dest: default
    gateway: 192.0.2.1
    device: eth0
    onlink: true
"""

RETURN = r"""
route:
  description: The managed route after the run, as module options; null with O(state=absent).
  returned: always
  type: dict
  sample: {"family": "ipv4", "table": 100, "dest": "0.0.0.0/0", "type": "local", "gateway": null, "device": "lo",
           "source": null, "metric": 0, "proto": "boot", "onlink": false, "nexthops": []}
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
  description:
    - The routes removed or replaced, including those removed by O(exclusive), as module options that add them back
      as they were (O(nexthops) of a multipath route, O(proto), O(onlink)).
  returned: always
  type: list
  elements: dict
  sample: [{"family": "ipv4", "table": 254, "dest": "0.0.0.0/0", "type": "unicast", "gateway": null,
            "device": null, "source": null, "metric": 0, "proto": "static", "onlink": false,
            "nexthops": [{"gateway": "10.0.2.2", "device": "eth1", "weight": 1, "onlink": false},
                         {"gateway": "10.0.3.2", "device": "eth2", "weight": 2, "onlink": false}]}]
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
            nexthops=dict(type="list", elements="dict", options=dict(
                gateway=dict(type="str"),
                device=dict(type="str"),
                weight=dict(type="int", default=1),
                onlink=dict(type="bool", default=False),
            )),
            source=dict(type="str"),
            proto=dict(type="raw"),
            onlink=dict(type="bool"),
            table=dict(type="raw", default="main"),
            metric=dict(type="int"),
            family=dict(type="str", choices=["ipv4", "ipv6"]),
            exclusive=dict(type="bool", default=False),
            append=dict(type="bool", default=False),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        lambda module, ipr: ensure(ipr, module.params, check_mode=module.check_mode),
        opened=IPRoute,
    )


if __name__ == "__main__":
    main()
