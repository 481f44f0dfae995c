# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""Stateless source-rewrite rules on one device: normalisation, backend choice, plan and apply.

The rules are what methods 2a/2b of the DSR article install with
``tc ... u32 match ip src X match ip sport 53 action nat egress X VIP``. Two backends own them:

- ``tc`` (tc_nat_backend_tc): a root htb qdisc and u32 filters with the ``nat`` action, over
  netlink (pyroute2 plus this collection's codec of the action);
- ``nftables`` (tc_nat_backend_nft): one table of the ``netdev`` family on the device's
  ``egress`` hook, loaded atomically with ``nft -f -``; IPv6 as well.

Everything here raises the domain errors of common.py and never talks to Ansible.
Flow: normalise -> read both backends -> plan (before/after lines, steps) -> apply in a
transaction (undo what was applied when a step fails).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import errno
import gzip
import ipaddress
import os
import re

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import (
    ApplyError,
    IPRoute,
    KernelFeatureError,
    ReadError,
    ValidationError,
    check_range,
    interface_index,
    parse_address,
    parse_prefix,
    same_family,
)

PROTOCOLS = ("udp", "tcp")
IPPROTO = {"udp": 17, "tcp": 6}
BACKENDS = ("auto", "tc", "nftables")

# the tc backend writes one u32 filter per upstream address (see tc_nat_backend_tc): a prefix
# of more than this many addresses is refused there (the nftables backend takes any prefix)
TC_MAX_ADDRESSES_PER_RULE = 256

# the tc backend writes one pass filter per excluded prefix, with node ids 1..0x7ff of prio 1's root
# hash table: below the link's (0x800, where the kernel's own ids start), so that they are tried first
TC_MAX_EXCLUSIONS = 0x7FF


def device_id(device):
    """A device name as an identifier for nft tables, unit and file names: letters and digits kept, every other
    byte as ``_xx`` (injective, so two devices never share a table or a file)."""
    out = []
    for byte in bytearray(device.encode("utf-8")):
        char = chr(byte)
        out.append(char if (char.isalnum() and byte < 128) else "_%02x" % byte)
    return "".join(out)


class Rule(collections.namedtuple("Rule", "src protocol sport nat_to")):
    """One normalised rule: ``src`` an ip_network, ``protocol`` udp|tcp, ``sport`` int, ``nat_to`` an ip_address."""

    __slots__ = ()

    @property
    def version(self):
        return self.src.version

    @property
    def match(self):
        """What a packet is matched on, without the rewrite: (version, protocol, sport)."""
        return (self.src.version, self.protocol, self.sport)

    def sort_key(self):
        return (self.src.version, self.protocol, self.sport, int(self.src.network_address), self.src.prefixlen, int(self.nat_to))

    def as_dict(self):
        return {"src": str(self.src), "protocol": self.protocol, "sport": self.sport, "nat_to": str(self.nat_to)}

    def __str__(self):
        return "%s %s sport %d -> %s" % (self.src, self.protocol, self.sport, self.nat_to)


def normalise_rule(raw, what="rule"):
    """A rule dict {src, protocol, sport, nat_to} -> Rule, or ValidationError."""
    if not isinstance(raw, dict):
        raise ValidationError("%s must be a dict with src, protocol, sport and nat_to, got %r" % (what, raw))
    unknown = sorted(set(raw) - set(("src", "protocol", "sport", "nat_to")))
    if unknown:
        raise ValidationError("%s: unknown key(s) %s (expected src, protocol, sport, nat_to)" % (what, ", ".join(unknown)))
    for key in ("src", "sport", "nat_to"):
        if raw.get(key) in (None, ""):
            raise ValidationError("%s.%s is required" % (what, key))
    src = parse_prefix(raw["src"], what="%s.src" % what, strict=True)
    protocol = str(raw.get("protocol") or "udp").lower()
    if protocol not in PROTOCOLS:
        raise ValidationError("%s.protocol %r is not one of %s" % (what, raw.get("protocol"), ", ".join(PROTOCOLS)))
    if isinstance(raw["sport"], bool):
        raise ValidationError("%s.sport %r is not a port number" % (what, raw["sport"]))
    sport = check_range(raw["sport"], 1, 65535, "%s.sport" % what)
    nat_to = parse_address(raw["nat_to"], what="%s.nat_to" % what)
    same_family([src, nat_to], what="%s: src and nat_to" % what)
    return Rule(src, protocol, sport, nat_to)


def collapse(rules):
    """Merge rules that differ only in ``src`` into the fewest prefixes; refuse conflicting rewrites.

    Contiguous upstreams with the same protocol, port and target collapse
    (172.16.0.8/30 + 172.16.0.12/30 -> 172.16.0.8/29). A source matched by two rules with
    different ``nat_to`` is ambiguous and refused.
    """
    groups = collections.OrderedDict()
    for rule in rules:
        groups.setdefault((rule.match, rule.nat_to), []).append(rule.src)
    result = []
    for (match, nat_to), sources in groups.items():
        for network in ipaddress.collapse_addresses(sources):
            result.append(Rule(network, match[1], match[2], nat_to))
    by_match = collections.defaultdict(list)
    for rule in result:
        by_match[rule.match].append(rule)
    for match, same in by_match.items():
        same.sort(key=lambda r: (int(r.src.network_address), r.src.prefixlen))
        for first, second in zip(same, same[1:]):
            if first.src.overlaps(second.src) and first.nat_to != second.nat_to:
                raise ValidationError(
                    "rules conflict: %s sport %d from %s would be rewritten both to %s and to %s"
                    % (match[1], match[2], first.src if first.src.prefixlen >= second.src.prefixlen else second.src, first.nat_to, second.nat_to)
                )
    return sorted(result, key=Rule.sort_key)


def normalise_rules(raw_rules):
    """The module's ``rules`` option -> collapsed, sorted list of Rule (ValidationError on bad input)."""
    rules = [normalise_rule(raw, "rules[%d]" % i) for i, raw in enumerate(raw_rules or [])]
    return collapse(rules)


def subtract(rules, removals):
    """``rules`` minus ``removals`` (same protocol, port and target), address space-wise, collapsed."""
    remaining = []
    for rule in rules:
        pieces = [rule.src]
        for removal in removals:
            if (removal.match, removal.nat_to) != (rule.match, rule.nat_to):
                continue
            next_pieces = []
            for piece in pieces:
                if not piece.overlaps(removal.src):
                    next_pieces.append(piece)
                elif removal.src.supernet_of(piece):
                    continue
                else:
                    next_pieces.extend(piece.address_exclude(removal.src))
            pieces = next_pieces
        remaining.extend(Rule(piece, rule.protocol, rule.sport, rule.nat_to) for piece in pieces)
    return collapse(remaining)


# --- exclude_destinations ------------------------------------------------------------------------


def collapse_networks(networks):
    """Networks of both families -> the fewest prefixes covering them, IPv4 first, each family by address."""
    result = []
    for version in (4, 6):
        same = [network for network in networks if network.version == version]
        result.extend(sorted(ipaddress.collapse_addresses(same), key=lambda n: (int(n.network_address), n.prefixlen)))
    return result


def normalise_exclusions(raw):
    """The module's ``exclude_destinations`` option -> collapsed, sorted list of ip_network (ValidationError on bad input).

    Each item is an address (a host prefix) or a prefix, IPv4 or IPv6; host bits set are refused as in
    ``rules[].src``. Every message names the offending item (``exclude_destinations[2]``).
    """
    if raw is None:
        return []
    if isinstance(raw, (str, bytes, dict)) or not isinstance(raw, (list, tuple)):
        raise ValidationError("exclude_destinations must be a list of addresses or prefixes, got %r" % (raw,))
    networks = []
    for i, item in enumerate(raw):
        what = "exclude_destinations[%d]" % i
        if not isinstance(item, str):
            raise ValidationError("%s must be an address or prefix (a string), got %r" % (what, item))
        networks.append(parse_prefix(item, what=what, strict=True))
    return collapse_networks(networks)


def subtract_networks(networks, removals):
    """``networks`` minus ``removals``, address space-wise, collapsed."""
    remaining = []
    for network in networks:
        pieces = [network]
        for removal in removals:
            next_pieces = []
            for piece in pieces:
                if piece.version != removal.version or not piece.overlaps(removal):
                    next_pieces.append(piece)
                elif removal.supernet_of(piece):
                    continue
                else:
                    next_pieces.extend(piece.address_exclude(removal))
            pieces = next_pieces
        remaining.extend(pieces)
    return collapse_networks(remaining)


def wanted_objects(state, backend, looked, rules, exclusions, existing):
    """What each backend holds after the run: {"tc": (rules, exclusions), "nftables": (rules, exclusions)}.

    ``existing``: the same, read from the kernel. ``present``: ``backend`` gets ``rules`` and
    ``exclusions``, the other backend nothing. ``absent``, in the backends ``looked`` at: with neither
    rules nor exclusions listed, nothing is left; otherwise the listed rules and exclusions are taken out
    (address-wise). Exclusions only exist alongside rules: a backend left without rules keeps none.
    Backends not looked at keep what they hold.
    """
    wanted = {}
    for name in ("tc", "nftables"):
        have_rules, have_excl = existing[name]
        if state == "present":
            want_rules, want_excl = (rules, exclusions) if name == backend else ([], [])
        elif name not in looked:
            want_rules, want_excl = have_rules, have_excl
        elif not rules and not exclusions:
            want_rules, want_excl = [], []
        else:
            want_rules = subtract(have_rules, rules) if rules else list(have_rules)
            want_excl = subtract_networks(have_excl, exclusions) if exclusions else list(have_excl)
        wanted[name] = (list(want_rules), list(want_excl) if want_rules else [])
    return wanted


def tc_unsupported(rules, exclusions=()):
    """Why ``rules`` and ``exclusions`` cannot be written with the tc backend (a message), or None."""
    for rule in rules:
        if rule.version != 4:
            return "rule %s is IPv6: the tc nat action is IPv4-only (use backend nftables)" % (rule,)
        if rule.src.num_addresses > TC_MAX_ADDRESSES_PER_RULE:
            return (
                "rule %s covers %d addresses: the tc backend writes one filter per upstream address "
                "(a nat action maps a prefix onto a prefix, never many addresses onto one), at most %d "
                "per rule; use backend nftables for large prefixes" % (rule, rule.src.num_addresses, TC_MAX_ADDRESSES_PER_RULE)
            )
    for network in exclusions:
        if network.version != 4:
            return "exclude_destinations %s is IPv6: the tc backend matches IPv4 only (use backend nftables)" % network
    if len(exclusions) > TC_MAX_EXCLUSIONS:
        return (
            "%d exclusions (after collapsing exclude_destinations): the tc backend writes one pass filter per prefix, "
            "at most %d; use backend nftables" % (len(exclusions), TC_MAX_EXCLUSIONS)
        )
    return None


# --- act_nat detection ----------------------------------------------------------------------------

ACT_NAT_MODULE = re.compile(r"(^|/)act_nat\.ko(\.[a-z0-9]+)?$")


def act_nat_support(release=None, proc="/proc", modules_root="/lib/modules", boot="/boot"):
    """Whether this kernel can run the tc ``nat`` action: (bool, how we know). Reads files only.

    In order: act_nat loaded (/proc/modules); the kernel's config (/proc/config.gz or
    /boot/config-<release>: ``CONFIG_NET_ACT_NAT`` =y built in, =m module, unset absent);
    modules.builtin and modules.dep of /lib/modules/<release> (a module the kernel loads on
    demand, as tc's first nat filter does); last, /proc/kallsyms for a built-in tcf_nat_act.
    Nothing is loaded or created: check mode and ``auto`` stay side-effect free.
    """
    if release is None:
        release = os.uname()[2]
    modules = _read(os.path.join(proc, "modules"))
    if modules and re.search(r"^act_nat\s", modules, re.M):
        return True, "act_nat is loaded (%s/modules)" % proc
    config, config_path = _kernel_config(release, proc, boot)
    moddir = os.path.join(modules_root, release)
    if config is not None:
        match = re.search(r"^CONFIG_NET_ACT_NAT=([ym])", config, re.M)
        if not match:
            return False, "CONFIG_NET_ACT_NAT is not set in %s" % config_path
        if match.group(1) == "y":
            return True, "CONFIG_NET_ACT_NAT=y in %s" % config_path
        found = _module_file(moddir)
        if found:
            return True, "CONFIG_NET_ACT_NAT=m in %s and %s" % (config_path, found)
        return False, "CONFIG_NET_ACT_NAT=m in %s but no act_nat module under %s" % (config_path, moddir)
    builtin = _read(os.path.join(moddir, "modules.builtin"))
    if builtin and any(ACT_NAT_MODULE.search(line.strip()) for line in builtin.splitlines()):
        return True, "act_nat is built in (%s/modules.builtin)" % moddir
    found = _module_file(moddir)
    if found:
        return True, "act_nat module %s" % found
    if _kallsyms_has(os.path.join(proc, "kallsyms"), "tcf_nat_act"):
        return True, "tcf_nat_act is in %s/kallsyms" % proc
    return False, "no act_nat: not loaded, not built in, no module under %s, no kernel config found" % moddir


def _read(path):
    """The text of ``path``; None when it does not exist. Any other failure is a ReadError: a file that is there but
    cannot be read says nothing about act_nat."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rt") as handle:
                return handle.read()
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError) as exc:
        if getattr(exc, "errno", None) in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise ReadError("reading %s failed: %s" % (path, exc))


def _kernel_config(release, proc, boot):
    for path in (os.path.join(proc, "config.gz"), os.path.join(boot, "config-%s" % release)):
        text = _read(path)
        if text is not None:
            return text, path
    return None, None


def _module_file(moddir):
    dep = _read(os.path.join(moddir, "modules.dep"))
    if not dep:
        return None
    for line in dep.splitlines():
        name = line.split(":", 1)[0].strip()
        if ACT_NAT_MODULE.search(name):
            path = name if os.path.isabs(name) else os.path.join(moddir, name)
            if os.path.exists(path):
                return path
    return None


def _kallsyms_has(path, symbol):
    text = _read(path) or ""
    return any(len(fields) >= 3 and fields[2] == symbol for fields in (line.split() for line in text.splitlines()))


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


# --- plan and apply ------------------------------------------------------------------------------


class Step(object):
    """One change: ``line`` (readable), ``do()`` and ``undo()`` (None when nothing to undo)."""

    def __init__(self, line, do, undo=None):
        self.line = line
        self.do = do
        self.undo = undo


def apply_steps(steps):
    """Run the steps in order; when one fails, undo the applied ones in reverse, raise ApplyError."""
    done = []
    for step in steps:
        try:
            step.do()
        except Exception as exc:  # the netlink/nft error of any step
            failures = []
            for applied in reversed(done):
                if applied.undo is None:
                    continue
                try:
                    applied.undo()
                except Exception as undo_exc:
                    failures.append("%s: %s" % (applied.line, undo_exc))
            if failures:
                raise ApplyError(
                    "failed at '%s': %s; undoing what was applied failed too: %s" % (step.line, exc, "; ".join(failures)),
                    rolled_back=False,
                )
            raise ApplyError("failed at '%s': %s; the %d change(s) applied before were undone" % (step.line, exc, len(done)), rolled_back=True)
        done.append(step)


def run(params, check_mode=False, detect=act_nat_support, ipr_factory=None):
    """The whole module: returns the result dict (changed, backend, rules, added, removed, exclude_destinations,
    diff, commands, boot_files).

    ``params``: device, backend, rules, exclude_destinations, state, foreign_qdisc, persist, persist_dir, unit_dir
    (as the module's argument_spec).
    """
    from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import nft_backend as nft_backend
    from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import tc_backend as tc_backend
    from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import persist as persist

    device = params["device"]
    state = params.get("state") or "present"
    requested = params.get("backend") or "auto"
    rules = normalise_rules(params.get("rules"))
    exclusions = normalise_exclusions(params.get("exclude_destinations"))
    if not device or "/" in device or len(device) > 15:
        raise ValidationError("device %r is not a valid interface name" % (device,))
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
