# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""The troubleshoot role's report: the diagnosis' findings and the packet traces as readable text.

Pure functions, run on the controller. Imports _checks (each service's method) and _trace (a hop's one-line summary).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.netops.ip_transparency.plugins.plugin_utils._checks import method_of, methods_of
from ansible_collections.netops.ip_transparency.plugins.plugin_utils._trace import endpoint, hop_summary, probe_family, probe_vip


def _short(event):
    def end(address, port):
        return address if port is None else endpoint(address, port)

    return "%-10s %-6s %-3s %s > %s %s" % (
        event["host"], event["iface"], event["dir"], end(event["src"], event["sport"]), end(event["dst"], event["dport"]),
        event.get("summary") or hop_summary(event))


def report(config, findings, traces=None):
    """The findings (and the traces) as readable text."""
    problems = [f for f in findings if f["severity"] in ("error", "warning")]
    # info: something left unchecked (IPv6 upstreams without an IPv6 client or VIP...), said but not counted as a problem
    problems += [f for f in findings if f["severity"] == "info"]
    methods = methods_of(config)
    lines = ["Troubleshooting report: %s %s, VIP %s, client %s" % (
        "methods" if len(methods) > 1 else "method", ", ".join(methods), config["public_address"], config["client_address"])
        + ("; IPv6 VIP %s, client %s" % (config.get("public_address6") or "unknown", config.get("client_address6") or "unknown")
           if config.get("public_address6") or config.get("client_address6") else "")]
    if config.get("services"):
        each = ["%s (%s/%d): %s" % (s["name"], s["protocol"], s["port"], method_of(config, s)) for s in config["services"]]
        lines.append("Services: %s" % "; ".join(each))
    lines.append("")
    for finding in problems:
        lines.append("%-7s %s: %s [%s]" % (finding["severity"].upper(), finding["host"], finding["problem"], finding["check"]))
        for line in finding["evidence"]:
            lines.append("          evidence: %s" % line)
        lines.append("          fix: %s" % finding["fix"])
        lines.append("")
    hosts = []
    for finding in findings:
        if finding["host"] not in hosts:
            hosts.append(finding["host"])
    for host in hosts:
        passed = sorted(set(f["check"] for f in findings if f["host"] == host and f["severity"] == "ok"))
        failed = sorted(set(f["check"] for f in findings if f["host"] == host and f["severity"] in ("error", "warning")))
        lines.append("%-10s %s%s" % (host, "ok: %s" % ", ".join(passed) if passed else "", ("; FAILED: %s" % ", ".join(failed)) if failed else ""))
    # with IPv6 probes among them, each trace says its family (IPv4 only: as before)
    families = any(probe_family(r["probe"]) == 6 for r in traces or [])
    for result in traces or []:
        probe = result["probe"]
        lines.append("")
        lines.append("Packet trace, probe %s%s %s from %s (%s): %s%s" % (
            "IPv%d " % probe_family(probe) if families else "", probe["kind"], endpoint(probe_vip(config, probe), probe["port"]), probe["host"],
            endpoint(probe["client_address"], probe["client_port"]), "answered" if probe.get("answered") else "NO ANSWER",
            " [service %s, method %s]" % (probe["service"], probe["method"]) if probe.get("service") and probe.get("method") else ""))
        for number, hop in enumerate(result["hops"], 1):
            lines.append("  %d. %-53s %s  +%.1f ms" % (number, hop["stage"], _short(hop), (hop["t"] - result["start"]) * 1000))
        lines.append("  %s %s" % ("OK" if result["ok"] else "LOST", result["verdict"]))
    errors = len([f for f in problems if f["severity"] == "error"])
    warnings = len([f for f in problems if f["severity"] == "warning"])
    problems = [f for f in problems if f["severity"] != "info"]
    lost = [r for r in traces or [] if not r["ok"]]
    lines.append("")
    if problems or lost:
        lines.append("Summary: %d error(s), %d warning(s) on %s%s" % (
            errors, warnings, ", ".join(sorted(set(f["host"] for f in problems))) or "no host",
            "; %d of %d probe(s) lost (at %s)" % (len(lost), len(traces), ", ".join(sorted(set(r["culprit"] or "?" for r in lost)))) if lost else ""))
    else:
        lines.append("Summary: healthy - %d checks passed%s" % (len(findings), ", every probe answered" if traces else ""))
    return "\n".join(lines)
