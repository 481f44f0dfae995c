#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: prerequisites_info
short_description: Say what a host lacks of what the collection's modules and roles need there (read-only)
version_added: "0.1.0"
description:
  - Looks, without changing anything, for what the other modules and the roles need on the managed host - pyroute2
    importable by the interpreter the modules run with (and at least 0.7.2), commands such as C(nft), C(tc),
    C(ip) or C(unshare), systemd as the init system, and what a tc_nat_filter backend needs - and returns what is
    missing with the Debian package that provides it.
  - The roles run it in their preflight and refuse a host that lacks something, before any host changes.
  - Never fails for something missing (see RV(missing)); unlike the other modules it runs without pyroute2.
extends_documentation_fragment:
  - netops.ip_transparency.common.info
  - netops.ip_transparency.common
options:
  pyroute2:
    description: Whether pyroute2 (0.7.2 or later) must be importable by the interpreter this module runs with.
    type: bool
    default: true
  commands:
    description:
      - Commands that must be found, in PATH or in C(/usr/sbin), C(/sbin), C(/usr/local/sbin) as the modules look
        for them (for example V(nft), V(tc), V(ip), V(unshare), V(sysctl)).
    type: list
    elements: str
    default: []
  systemd:
    description: Whether systemd must be the init system (C(/run/systemd/system) exists).
    type: bool
    default: false
  nat_backend:
    description:
      - What netops.ip_transparency.tc_nat_filter with this O(netops.ip_transparency.tc_nat_filter#module:backend)
        needs - V(nftables) the C(nft) command; V(tc) the C(tc) command for its boot unit (with O(nat_persist)); V(auto)
        either, after the same act_nat detection as the module.
      - Whether the kernel has the tc nat action is checked by tc_nat_filter itself (in check mode).
    type: str
    choices: [auto, tc, nftables]
  nat_persist:
    description: Whether the tc_nat_filter rules are persisted (a tc backend's boot unit runs C(tc -batch)).
    type: bool
    default: false
notes:
  - A command is looked for in the module's own PATH (as the roles' commands run) and in the sbin directories.
"""

EXAMPLES = r"""
- name: Look for what the proxy needs
  netops.ip_transparency.prerequisites_info:
    commands: [nft, unshare, ip]
    systemd: true
  register: prerequisites

- name: Refuse a host that lacks something, before any change
  ansible.builtin.assert:
    that: prerequisites.missing | length == 0
    fail_msg: "{{ inventory_hostname }} lacks {{ prerequisites.summary }}"
"""

RETURN = r"""
missing:
  description: What is missing, each with the Debian package that provides it; empty when nothing is.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: V(pyroute2), a command's name or V(systemd).
      type: str
    package:
      description: The Debian package that provides it (V(python3-pyroute2), V(nftables), V(iproute2)...).
      type: str
    reason:
      description: What was looked for and what was found.
      type: str
  sample: [{"name": "nft", "package": "nftables", "reason": "no nft command in PATH or /usr/sbin:/sbin:/usr/local/sbin (for nftables rules)"}]
packages:
  description: The Debian packages that would provide what is missing, sorted.
  returned: always
  type: list
  elements: str
  sample: [nftables, python3-pyroute2]
summary:
  description: One sentence naming what is missing and the packages to install; empty when nothing is.
  returned: always
  type: str
python:
  description: The interpreter this module (and so the collection's other modules) runs with.
  returned: always
  type: str
  sample: /usr/bin/python3
pyroute2_version:
  description: pyroute2's version as that interpreter imports it (null when it cannot, or with O(pyroute2=false)).
  returned: always
  type: str
  sample: "0.7.2"
commands:
  description: Command -> its path, null when not found.
  returned: always
  type: dict
  sample: {"nft": "/usr/sbin/nft"}
nat_backend:
  description: The tc_nat_filter backend the needs were worked out for (V(auto) resolved).
  returned: with O(nat_backend)
  type: str
systemd:
  description: Whether systemd is the init system.
  returned: with O(systemd=true)
  type: bool
"""

from ansible_collections.netops.ip_transparency.plugins.module_utils._module import run_module
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat.kernel import act_nat_support
from ansible_collections.netops.ip_transparency.plugins.module_utils._prerequisites import missing_items


def look(module):
    params = module.params
    result = missing_items(pyroute2=params["pyroute2"], commands=params["commands"], systemd=params["systemd"],
                           nat_backend=params["nat_backend"], nat_persist=params["nat_persist"], act_nat=act_nat_support)
    result["changed"] = False
    return result


def main():
    run_module(
        dict(
            pyroute2=dict(type="bool", default=True),
            commands=dict(type="list", elements="str", default=[]),
            systemd=dict(type="bool", default=False),
            nat_backend=dict(type="str", choices=["auto", "tc", "nftables"]),
            nat_persist=dict(type="bool", default=False),
        ),
        look,
        needs_pyroute2=False,
    )


if __name__ == "__main__":
    main()
