#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rp_filter
short_description: Manage IPv4 reverse-path filtering (rp_filter) per interface, effectively and persistently
version_added: "0.1.0"
description:
  - Sets C(net.ipv4.conf.<interface>.rp_filter) for the O(interfaces) given (V(all), V(default), device names,
    names with dots such as VLAN C(eth0.100)) and persists the settings in a sysctl.d file so they hold after a reboot.
  - The kernel filters with the higher of C(conf.all.rp_filter) and C(conf.<interface>.rp_filter). With
    O(effective=true) the module makes the requested value the effective one - when C(all) is higher, it lowers C(all)
    and raises every interface not listed (V(default) included) that relied on C(all) to the old C(all) value, so
    their effective filtering stays the same. It returns the configured and effective values.
  - O(state=absent) restores the values each key had before the module first changed it (recorded as comments in
    O(sysctl_file)) and removes its persisted lines, once no listed interface needs a key any more.
  - Transparent proxying and Direct Server Return make packets arrive with source addresses the reverse path
    does not lead back through, which strict filtering silently drops.
extends_documentation_fragment:
  - netops.ip_transparency.common
attributes:
  diff_mode:
    description: Shows the sysctl values (and the managed file when it changes) before and after.
options:
  interfaces:
    description:
      - Interfaces to set, by name as in C(/proc/sys/net/ipv4/conf) - V(all), V(default), C(eth0), C(eth0.100).
      - With O(state=present) every interface must exist in the network namespace the module runs in.
    type: list
    elements: str
    required: true
  value:
    description:
      - C(off) (C(0)), C(strict) (C(1), RFC 3704 strict) or C(loose) (C(2)). Required with O(state=present).
      - An unquoted YAML C(off) (read as boolean false) is taken as C(off).
    type: raw
  effective:
    description:
      - Make O(value) the effective value of the listed interfaces, adjusting C(all) and the interfaces relying on
        it as described above. With V(false) only the listed keys are written and the kernel's max() rule applies.
      - With V(true), listing V(all) together with interfaces that get a lower value is an error.
    type: bool
    default: true
  persist:
    description:
      - Write the settings to O(sysctl_file) so they hold after a reboot. With V(false) the file only keeps the
        records of the original values (for O(state=absent)).
    type: bool
    default: true
  sysctl_file:
    description:
      - The sysctl.d file the module manages (absolute path). Keys of interfaces with dots use the slash form
        C(net/ipv4/conf/eth0.100/rp_filter). The file is removed when nothing is left in it.
    type: path
    default: /etc/sysctl.d/60-netops-rp-filter.conf
  state:
    description:
      - V(present) sets the values; V(absent) restores the recorded originals of the listed interfaces.
    type: str
    choices: [present, absent]
    default: present
notes:
  - C(/proc/sys/net) is per network namespace; in a container it must be writable (see the lab notes).
  - IPv6 has no rp_filter sysctl.
  - When a kernel write or the file write fails, the values already written are restored and the module fails
    with C(rolled_back=true).
"""

EXAMPLES = r"""
- name: Let transparent-proxy replies in on eth2 (and keep the other interfaces as filtered as before)
  netops.ip_transparency.rp_filter:
    interfaces: [eth2]
    value: "off"

- name: Loose filtering on a VLAN interface, persisted in a file of your choice
  netops.ip_transparency.rp_filter:
    interfaces: [eth0.100]
    value: loose
    sysctl_file: /etc/sysctl.d/61-proxy-rp-filter.conf

- name: Teardown - restore what was there before
  netops.ip_transparency.rp_filter:
    interfaces: [eth2]
    state: absent
"""

RETURN = r"""
values:
  description: Per interface (the listed ones, C(all) and any the module adjusted), the configured and effective value.
  returned: always
  type: dict
  sample: {"all": {"configured": "off", "effective": "off"}, "eth2": {"configured": "off", "effective": "off"},
           "eth0": {"configured": "loose", "effective": "loose"}}
changed_keys:
  description: The sysctl keys written, in the order they were written.
  returned: always
  type: list
  elements: str
  sample: ["net.ipv4.conf.default.rp_filter", "net.ipv4.conf.eth0.rp_filter", "net.ipv4.conf.all.rp_filter"]
sysctl_file:
  description: The managed sysctl.d file.
  returned: always
  type: str
  sample: /etc/sysctl.d/60-netops-rp-filter.conf
"""

from ansible_collections.netops.ip_transparency.plugins.module_utils._module import run_module
from ansible_collections.netops.ip_transparency.plugins.module_utils._rp_filter import DEFAULT_SYSCTL_FILE, ensure


def main():
    run_module(
        dict(
            interfaces=dict(type="list", elements="str", required=True),
            value=dict(type="raw"),
            effective=dict(type="bool", default=True),
            persist=dict(type="bool", default=True),
            sysctl_file=dict(type="path", default=DEFAULT_SYSCTL_FILE),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        lambda module: ensure(module.params, check_mode=module.check_mode),
        needs_pyroute2=False,
        required_if=[("state", "present", ["value"])],
    )


if __name__ == "__main__":
    main()
