# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""The part every module of the collection shares: build the AnsibleModule, refuse to run without
pyroute2, run the module's work and end with ``exit_json`` or ``fail_json``.

The module passes its work as a callable; nothing here talks to the kernel. How errors end is
decided by ``_common.outcome()``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import (
    HAS_PYROUTE2,
    PYROUTE2_IMPORT_ERROR,
    outcome,
)


def run_module(argument_spec, work, needs_pyroute2=True, opened=None, **module_args):
    """Run one module and end it; never returns.

    ``work(module)`` does the module's job and returns its result dict (``changed``, ``diff``, the
    return values); it raises the collection's errors (NetopsError) for failures it foresees. Every
    module supports check mode: ``work`` reads ``module.check_mode``. With ``opened`` (a context
    manager factory the module chooses, such as pyroute2's IPRoute) it is ``work(module, handle)``
    inside ``with opened() as handle``, so that an error opening it ends the module the same way.
    ``module_args`` go to AnsibleModule (``required_if``, ``mutually_exclusive``...).
    """
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, **module_args)
    if needs_pyroute2 and not HAS_PYROUTE2:
        module.fail_json(msg=missing_required_lib("pyroute2"), exception=PYROUTE2_IMPORT_ERROR)

    def act():
        if opened is None:
            return work(module)
        with opened() as handle:
            return work(module, handle)

    ok, result = outcome(act, module._diff)
    if ok:
        module.exit_json(**result)
    module.fail_json(**result)
