# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """The netlink modules' requirement (pyroute2) and where they act (the network namespace)."""

    DOCUMENTATION = r"""
options: {}
requirements:
  - pyroute2 >= 0.7.2 on the managed host (Debian 12's python3-pyroute2 is 0.7.2)
notes:
  - Talks to the kernel over netlink in the network namespace the module runs in (the host's, a container's, or one
    entered with C(ip netns exec)).
"""
