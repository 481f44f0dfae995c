#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: tc_nat_filter
short_description: Stateless source NAT of upstream replies on one device (tc nat action or nftables netdev egress)
version_added: "0.1.0"
description:
  - Owns the stateless rewrite that Direct Server Return needs (methods 2a router NAT and 2b origin NAT of the
    NGINX DSR article) on one device. Each rule matches packets leaving O(device) from an upstream address or
    prefix (O(rules[].src)), with a protocol and a source port, and rewrites their source address to
    O(rules[].nat_to). Checksums are fixed by the kernel.
  - The rules are the complete set of the device; with O(state=present) rules that are there but not listed are
    removed. Rules that differ only in O(rules[].src) and are contiguous collapse into prefixes
    (C(172.16.0.8/30) and C(172.16.0.12/30) become C(172.16.0.8/29)); a source rewritten to two different
    addresses is refused.
  - Backend V(tc), as in the article (C(tc ... u32 match ip src X match ip sport 53 action nat egress X VIP)),
    over netlink. A root C(htb) qdisc with handle C(d5:) and default class C(d5d5) (the module's marker) replaces
    the kernel's default root qdisc; a u32 filter at prio 1 hashes the last octet of the source address into a
    256-bucket hash table C(d5:), where each upstream address has one filter with a C(nat) action ending in
    C(continue). The per-packet cost is one hash lookup plus the upstreams sharing that bucket, not one test per
    upstream. The C(nat) action keeps the address bits outside its mask, so a many-to-one rewrite takes one
    filter per upstream address; a rule may cover at most 256 addresses with this backend. IPv4 only.
  - A root qdisc the module did not create is never replaced or deleted. With O(foreign_qdisc=fail) the module
    fails; with O(foreign_qdisc=attach) and a classful qdisc (htb, prio, hfsc, drr, ets, qfq) the filters are added
    to it at prio 1; as their actions end in C(continue) they do not change how that qdisc classifies.
  - Backend V(nftables) does the same rewrite in a table C(netops_nat_<device>) of the C(netdev) family, on the
    device's C(egress) hook, with one interval map lookup per packet (C(ip saddr . meta l4proto . th sport)); IPv4
    and IPv6. The table is loaded atomically with C(nft -f -) and marked with a comment; a table of that name
    without the mark is never replaced.
  - Backend V(auto) uses V(tc) when the kernel has the C(nat) action (act_nat) and every rule fits it, else
    V(nftables), and returns which in RV(backend). act_nat is detected from files only (C(/proc/modules), the
    kernel config in C(/proc/config.gz) or C(/boot), C(modules.builtin) and C(modules.dep) of the running kernel,
    C(/proc/kallsyms)); nothing is loaded or created to find out.
  - Asking for V(tc) on a kernel without act_nat fails before any change, naming the missing feature and the
    V(nftables) alternative. Bad input (not an address, a prefix with host bits set, an unknown device, a port
    out of range, an IPv6 rule with V(tc)) fails before any change as well.
  - O(exclude_destinations) lists destinations whose packets are never rewritten, whatever rule matches them
    (for example the proxy's private address, so that the reply to a health check the proxy sends from it reaches
    the probe's socket with the upstream's own address). With V(nftables), a set per family tested in the rewrite
    rule (C(ip daddr != @exclude4 ip saddr set ...)); with V(tc), one pass filter per prefix
    (C(match ip dst X action gact pass)) in front of the link to the nat filters' hash table.
  - Writing one backend removes what the module wrote with the other on the same device, so that packets are
    never rewritten twice. If applying fails half-way, what was applied is undone and the module fails with
    RV(rolled_back=true).
requirements:
  - for the V(tc) backend, a kernel with the tc C(nat) action (CONFIG_NET_ACT_NAT, act_nat) and htb and u32, and with
    O(exclude_destinations) the C(gact) action (CONFIG_NET_ACT_GACT, act_gact)
  - for the V(nftables) backend, the C(nft) command and a kernel with the netdev egress hook (5.16 or later)
extends_documentation_fragment:
  - netops.ip_transparency.common
  - netops.ip_transparency.pyroute2
attributes:
  diff_mode:
    description: Shows the module's objects before and after, C(tc)-like and C(nft)-like lines.
options:
  device:
    description:
      - The device whose outgoing packets are rewritten (the proxy's interface towards the clients for router NAT,
        the upstream's own interface for origin NAT). It must exist.
    type: str
    required: true
  backend:
    description:
      - How the rewrite is done. See the description.
    type: str
    choices: [auto, tc, nftables]
    default: auto
  rules:
    description:
      - The source-rewrite rules of the device.
      - With O(state=absent), the rules to remove; without rules (and without O(exclude_destinations)), everything
        the module created on the device.
    type: list
    elements: dict
    default: []
    suboptions:
      src:
        description:
          - The upstream address or prefix whose packets are rewritten, IPv4 or IPv6. An address means a host
            prefix; host bits set in a prefix are refused.
        type: str
        required: true
      protocol:
        description:
          - The transport protocol of the packets.
        type: str
        choices: [udp, tcp]
        default: udp
      sport:
        description:
          - The source port of the packets (the upstream's service port, V(53) for DNS), 1 to 65535.
        type: int
        required: true
      nat_to:
        description:
          - The address the source is rewritten to (the load balancer's public address), of the same family as
            O(rules[].src).
        type: str
        required: true
  exclude_destinations:
    description:
      - Destinations whose packets are never rewritten, IPv4 or IPv6 addresses or prefixes (an address means a host
        prefix; host bits set in a prefix are refused, as in O(rules[].src)). They apply to every rule of the device -
        a packet that a rule matches keeps its source when its destination lies in one of them.
      - The use is a host that talks to the upstream directly from an address the rewritten replies would not reach,
        such as the proxy probing the upstream's service from its private address for health checks.
      - Like O(rules), the complete set of the device with O(state=present); contiguous and overlapping prefixes are
        collapsed. They exist only alongside rules - with no rule left, none is kept.
      - With O(state=absent) the listed destinations are removed (address-wise) and the rules kept, unless O(rules)
        lists rules to remove too; with neither, everything the module created on the device goes.
      - V(nftables) tests the destination against a set per family (C(exclude4), C(exclude6)) in the rewrite rule of
        that family, one lookup per packet of that family; without exclusions the table has no set and no condition.
      - V(tc) adds one filter per prefix in the module's prio 1, ahead of the nat filters (C(match ip dst PREFIX
        action gact pass), node ids 1 to 7ff of the prio's root hash table, in front of the link at 800); a packet
        is compared with each of them before the hash lookup. Their verdict C(pass) ends the root qdisc's
        classification (the module's htb sends such packets directly, as it does unclassified ones), so with V(tc)
        they are refused on a root qdisc the module did not create (O(foreign_qdisc=attach)). IPv4 only with V(tc),
        at most 2047 prefixes; V(auto) picks V(nftables) for an IPv6 destination.
    type: list
    elements: str
    default: []
  foreign_qdisc:
    description:
      - What the V(tc) backend does when the device's root qdisc was not created by the module (and is not the
        kernel's default).
      - V(fail) refuses; V(attach) adds the filters to it when it is classful (htb, prio, hfsc, drr, ets, qfq), never
        deletes it and removes only its own filters.
    type: str
    choices: [fail, attach]
    default: fail
  persist:
    description:
      - Also make the device's rules come back at boot, without Ansible. The module writes, in the same transaction
        as the kernel change, a restore file under O(persist_dir) (C(nat-DEVICE.nft), the nft transaction the
        V(nftables) backend loads, or C(nat-DEVICE.tc), C(tc -batch) commands for the V(tc) backend) and a oneshot
        systemd unit C(netops-nat-DEVICE.service) in O(unit_dir) that loads it after C(network.target), enabled
        through its C(multi-user.target.wants) link. The files always match the rules and excluded destinations the
        device ends with; they are removed when no rule is left.
      - V(false) removes those files when a previous run wrote them, so that old rules cannot come back at boot.
      - Refused with the V(tc) backend on a root qdisc the module did not create (O(foreign_qdisc=attach)).
    type: bool
    default: false
  persist_dir:
    description:
      - Where the restore files are written (absolute path; created when missing).
    type: path
    default: /etc/netops-ip-transparency
  unit_dir:
    description:
      - Where the systemd unit and its C(multi-user.target.wants) link are written (absolute path). When it is the
        default and systemd runs, the module reloads systemd's configuration after changing them.
    type: path
    default: /etc/systemd/system
  state:
    description:
      - V(present) makes O(rules) the device's rules and O(exclude_destinations) its excluded destinations;
        V(absent) removes the listed rules and excluded destinations, or all of the module's objects on the device
        when both O(rules) and O(exclude_destinations) are empty (qdisc, filters, nftables table), restoring the
        device's original behaviour.
    type: str
    choices: [present, absent]
    default: present
notes:
  - The objects do not survive a reboot unless O(persist=true) (for the host's own network namespace, with systemd).
  - Only one caller should manage a device; the module owns the whole rule set of that device.
  - Stateless matching needs the ports, which only the first fragment of a fragmented IPv4 datagram carries; the
    other fragments keep the upstream's source (with either backend, as with the article's commands). Keep the
    replies below the path MTU (for DNS an EDNS buffer size such as 1232).
  - The V(tc) backend matches the source port at a fixed offset (20), as C(match ip sport) does, so packets with IP
    options are not rewritten.
  - C(tc filter show dev DEVICE) shows the filters (their actions read C(nat egress OLD/32 NEW continue); the
    excluded destinations' filters C(match HEXADDR/HEXMASK at 16) and C(gact action pass)), and
    C(nft list table netdev netops_nat_DEVICE) shows the table.
seealso:
  - name: tc-nat(8)
    description: The tc nat action.
    link: https://man7.org/linux/man-pages/man8/tc-nat.8.html
  - name: IP Transparency and Direct Server Return with NGINX and NGINX Plus as Transparent Proxy
    description: The article whose methods 2a and 2b this module implements.
    link: https://www.f5.com/company/blog/nginx/ip-transparency-direct-server-return-nginx-plus-transparent-proxy
"""

EXAMPLES = r"""
- name: Router NAT on the proxy (method 2a) - rewrite the four DNS upstreams' replies to the VIP
  netops.ip_transparency.tc_nat_filter:
    device: eth0
    rules:
      - {src: 172.16.0.11, protocol: udp, sport: 53, nat_to: 192.168.99.10}
      - {src: 172.16.0.12, protocol: udp, sport: 53, nat_to: 192.168.99.10}
      - {src: 172.16.0.13, protocol: udp, sport: 53, nat_to: 192.168.99.10}
      - {src: 172.16.0.14, protocol: udp, sport: 53, nat_to: 192.168.99.10}
  register: nat

- name: Show which backend was used
  ansible.builtin.debug:
    msg: "rewritten with {{ nat.backend }}: {{ nat.rules }}"

- name: Origin NAT on one upstream (method 2b), the article's tc commands
  netops.ip_transparency.tc_nat_filter:
    device: eth0
    backend: tc
    rules:
      - {src: 172.16.0.11, sport: 53, nat_to: 192.168.99.10}

- name: A whole upstream network, IPv4 and IPv6, with nftables
  netops.ip_transparency.tc_nat_filter:
    device: eth1
    backend: nftables
    rules:
      - {src: 172.16.0.0/28, sport: 53, nat_to: 192.168.99.10}
      - {src: "2001:db8:16::/64", sport: 53, nat_to: "2001:db8:99::10"}

- name: Origin NAT that leaves the replies to the proxy's own health checks alone (sent from its private address)
  netops.ip_transparency.tc_nat_filter:
    device: eth0
    rules:
      - {src: 172.16.0.11, sport: 53, nat_to: 192.168.99.10}
    exclude_destinations:
      - 172.16.0.1
    persist: true

- name: Stop excluding 172.16.0.1, keep the rules
  netops.ip_transparency.tc_nat_filter:
    device: eth0
    exclude_destinations: [172.16.0.1]
    state: absent

- name: Router NAT that survives a reboot (restore file and systemd unit written with the change)
  netops.ip_transparency.tc_nat_filter:
    device: eth0
    rules:
      - {src: 172.16.0.11, sport: 53, nat_to: 192.168.99.10}
    persist: true

- name: Remove everything the module set up on eth0 (and its boot files)
  netops.ip_transparency.tc_nat_filter:
    device: eth0
    state: absent
"""

RETURN = r"""
backend:
  description:
    - The backend written with (V(tc) or V(nftables)). With O(state=absent) and O(backend=auto), where the module's
      rules were (V(tc), V(nftables), V(both) or V(none)).
  returned: always
  type: str
  sample: nftables
backend_reason:
  description: Why that backend, for O(backend=auto) how act_nat was found or why it was not.
  returned: always
  type: str
  sample: "kernel lacks act_nat (CONFIG_NET_ACT_NAT is not set in /proc/config.gz)"
rules:
  description: The device's rules after the run, normalised and collapsed.
  returned: always
  type: list
  elements: dict
  sample: [{"src": "172.16.0.11/32", "protocol": "udp", "sport": 53, "nat_to": "192.168.99.10"}]
added:
  description: The rules added (normalised, collapsed).
  returned: always
  type: list
  elements: dict
  sample: [{"src": "172.16.0.11/32", "protocol": "udp", "sport": 53, "nat_to": "192.168.99.10"}]
removed:
  description:
    - The rules removed (normalised, collapsed) - with O(state=present) the device's rules that were not listed, with
      O(state=absent) the listed rules that were there (every rule when none is listed).
  returned: always
  type: list
  elements: dict
  sample: []
exclude_destinations:
  description: The device's excluded destinations after the run, normalised and collapsed (prefixes).
  returned: always
  type: list
  elements: str
  sample: ["172.16.0.1/32", "198.51.100.0/24"]
commands:
  description: The changes made (or, in check mode, that would be made), as C(tc)/C(nft) commands.
  returned: always
  type: list
  elements: str
  sample: ["tc qdisc add dev eth0 root handle d5: htb default d5d5"]
boot_files:
  description: The boot files (restore files, unit and its link) that exist after the run; empty without O(persist).
  returned: always
  type: list
  elements: str
  sample: ["/etc/netops-ip-transparency/nat-eth0.nft", "/etc/systemd/system/multi-user.target.wants/netops-nat-eth0.service",
           "/etc/systemd/system/netops-nat-eth0.service"]
device:
  description: The device.
  returned: always
  type: str
  sample: eth0
rolled_back:
  description: When applying failed half-way, whether what had been applied was undone.
  returned: failure
  type: bool
  sample: true
"""

from ansible_collections.netops.ip_transparency.plugins.module_utils._module import run_module
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat.run import run


def main():
    run_module(
        dict(
            device=dict(type="str", required=True),
            backend=dict(type="str", default="auto", choices=["auto", "tc", "nftables"]),
            rules=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    src=dict(type="str", required=True),
                    protocol=dict(type="str", default="udp", choices=["udp", "tcp"]),
                    sport=dict(type="int", required=True),
                    nat_to=dict(type="str", required=True),
                ),
            ),
            exclude_destinations=dict(type="list", elements="str", default=[]),
            foreign_qdisc=dict(type="str", default="fail", choices=["fail", "attach"]),
            persist=dict(type="bool", default=False),
            persist_dir=dict(type="path", default="/etc/netops-ip-transparency"),
            unit_dir=dict(type="path", default="/etc/systemd/system"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        lambda module: run(module.params, check_mode=module.check_mode),
    )


if __name__ == "__main__":
    main()
