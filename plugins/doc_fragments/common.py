# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """What every module of the collection shares in its documentation: the author, check and diff mode.

    ``netops.ip_transparency.common``: a state module (full check and diff mode); a module may give
    ``diff_mode.description`` itself to say what its diff shows.
    ``netops.ip_transparency.common.info`` then ``netops.ip_transparency.common``: a read-only module.
    """

    DOCUMENTATION = r"""
options: {}
author:
  - netops maintainers (@netops)
attributes:
  check_mode:
    support: full
    description: Reads the current state, then computes and reports the change and its diff without changing anything.
  diff_mode:
    support: full
    description: Shows the module's objects before and after the run, one line each.
"""

    # Listed before netops.ip_transparency.common, whose values it overrides (the first fragment's keys win).
    INFO = r"""
options: {}
attributes:
  check_mode:
    description: Reads only; check mode changes nothing either.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
"""
