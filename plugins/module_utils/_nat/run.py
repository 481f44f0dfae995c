# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""Stateless source-rewrite rules on one device: normalisation, backend choice, plan and apply.

The rules are what methods 2a/2b of the DSR article install with
``tc ... u32 match ip src X match ip sport 53 action nat egress X VIP``. Two backends own them:

- ``tc`` (tc_backend): a root htb qdisc and u32 filters with the ``nat`` action, over
  netlink (pyroute2 plus this collection's codec of the action);
- ``nftables`` (nft_backend): one table of the ``netdev`` family on the device's
  ``egress`` hook, loaded atomically with ``nft -f -``; IPv6 as well.

The package: model (rules and their arithmetic), kernel (act_nat detection), act_nat_codec, tc_backend,
nft_backend, persist (boot files) and this module. Their imports go one way: model and kernel import nothing
of the package, act_nat_codec neither; tc_backend and nft_backend import model (and the codec); persist
imports the backends; this module alone imports them all. Everything raises the domain errors of _common and
never talks to Ansible.
Flow: normalise -> read both backends -> plan (before/after lines, steps) -> apply in a
transaction (undo what was applied when a step fails).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import (
    IPRoute,
    KernelFeatureError,
    ValidationError,
    check_ifname,
    interface_index,
)
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import nft_backend, persist, tc_backend
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat.kernel import act_nat_support
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat.model import (
    BACKENDS,
    Rule,
    collapse_networks,
    normalise_exclusions,
    normalise_rules,
    tc_unsupported,
    wanted_objects,
)
from ansible_collections.netops.ip_transparency.plugins.module_utils._transaction import apply_steps


def choose_backend(requested, rules, state, detect=act_nat_support, exclusions=()):
    """The backend to write with: (name, reason). Raises before any change when ``tc`` cannot be.

    ``auto``: ``tc`` when the kernel has act_nat and every rule fits it, else ``nftables``.
    For ``state: absent`` the choice only says where to look; auto removes from both.
    """
    if requested == "nftables":
        return "nftables", "requested"
    if requested == "tc":
        if state == "present":
            problem = tc_unsupported(rules, exclusions)
            if problem:
                raise ValidationError(problem)
            available, how = detect()
            if not available:
                raise KernelFeatureError(
                    "backend tc needs the kernel's tc nat action (act_nat, CONFIG_NET_ACT_NAT), which this kernel lacks (%s); "
                    "use backend: nftables (a netdev table on the egress hook does the same rewrite) or backend: auto" % how
                )
            return "tc", how
        return "tc", "requested"
    if requested != "auto":
        raise ValidationError("backend %r is not one of %s" % (requested, ", ".join(BACKENDS)))
    available, how = detect()
    if not available:
        return "nftables", "kernel lacks act_nat (%s)" % how
    problem = tc_unsupported(rules, exclusions)
    if problem:
        return "nftables", problem
    return "tc", how


def run(params, check_mode=False, detect=act_nat_support, ipr_factory=None):
    """The whole module: returns the result dict (changed, backend, rules, added, removed, exclude_destinations,
    diff, commands, boot_files).

    ``params``: device, backend, rules, exclude_destinations, state, foreign_qdisc, persist, persist_dir, unit_dir
    (as the module's argument_spec).
    """
    device = params["device"]
    state = params.get("state") or "present"
    requested = params.get("backend") or "auto"
    rules = normalise_rules(params.get("rules"))
    exclusions = normalise_exclusions(params.get("exclude_destinations"))
    check_ifname(device, "device")
    boot = persist.Files(device, params.get("persist_dir") or persist.DEFAULT_PERSIST_DIR, params.get("unit_dir") or persist.DEFAULT_UNIT_DIR)
    factory = ipr_factory or IPRoute
    with factory() as ipr:
        found = ipr.link_lookup(ifname=device)
        if not found and state == "present":
            interface_index(ipr, device)  # the error that names the unknown device
        # absent on a device that is gone: its qdiscs and filters went with it, but a netdev table of the
        # module's and the boot files (which would recreate the rules at boot) are still removed
        index = found[0] if found else None
        backend, reason = choose_backend(requested, rules, state, detect, exclusions)
        tc = tc_backend.TcBackend(ipr, device, index, foreign_qdisc=params.get("foreign_qdisc") or "fail")
        nft = nft_backend.NftBackend(device)
        current = {"tc": tc.read() if index is not None else tc_backend.TcState(),
                   "nftables": nft.read(required=(backend == "nftables" and state == "present"))}
        existing = dict((name, (current[name].rules, current[name].exclusions)) for name in ("tc", "nftables"))
        looked = ("tc", "nftables") if (state == "present" or requested == "auto") else (backend,)
        wanted_both = wanted_objects(state, backend, looked, rules, exclusions, existing)
        wanted = dict((name, wanted_both[name][0]) for name in wanted_both)
        wanted_excl = dict((name, wanted_both[name][1]) for name in wanted_both)
        if state == "absent" and requested == "auto":
            present_in = [name for name in ("tc", "nftables") if current[name].exists]
            backend = present_in[0] if len(present_in) == 1 else ("none" if not present_in else "both")
            reason = "where the module's rules were"

        plans = {
            "tc": tc.plan(current["tc"], wanted["tc"], wanted_excl["tc"]),
            "nftables": nft.plan(current["nftables"], wanted["nftables"], wanted_excl["nftables"]),
        }
        if params.get("persist") and wanted["tc"] and not (current["tc"].root_ours or current["tc"].root_default):
            raise ValidationError(
                "persist cannot restore filters attached to the root qdisc %s of %s: the module did not create it and "
                "cannot tell when it exists at boot; restore that qdisc and the filters with it, or use backend: nftables"
                % (tc_backend.fmt_qdisc(current["tc"].root_handle), device)
            )
        boot_before = boot.read()
        boot_after = boot.wanted(wanted, params.get("persist"), wanted_excl)
        before_rules = set(existing["tc"][0]) | set(existing["nftables"][0])
        after_rules = set(wanted["tc"]) | set(wanted["nftables"])
        # the backend being written first, then the cleanup of the other one
        order = ("tc", "nftables") if backend == "tc" else ("nftables", "tc")
        steps = [step for name in order for step in plans[name].steps]
        # the boot files follow the kernel in the same transaction; systemd's reload after it, outside
        boot_steps = persist.plan(boot_before, boot_after, boot.unit_dir)
        steps.extend(boot_steps)
        reload_systemd = persist.reload_wanted(boot_steps, boot.unit_dir)
        result = {
            "changed": bool(steps),
            "backend": backend,
            "backend_reason": reason,
            "device": device,
            "rules": [rule.as_dict() for rule in sorted(after_rules, key=Rule.sort_key)],
            "added": [rule.as_dict() for rule in sorted(after_rules - before_rules, key=Rule.sort_key)],
            "removed": [rule.as_dict() for rule in sorted(before_rules - after_rules, key=Rule.sort_key)],
            "exclude_destinations": [str(network) for network in collapse_networks(wanted_excl["tc"] + wanted_excl["nftables"])],
            "commands": [step.line for step in steps] + ([persist.RELOAD_LINE] if reload_systemd else []),
            "boot_files": sorted(boot_after),
            "diff": {
                "before": "".join(line + "\n" for line in [ln for name in order for ln in plans[name].before] + persist.lines(boot_before)),
                "after": "".join(line + "\n" for line in [ln for name in order for ln in plans[name].after] + persist.lines(boot_after)),
            },
        }
        if steps and not check_mode:
            apply_steps(steps)
            if reload_systemd:
                persist.reload_systemd()
        return result
