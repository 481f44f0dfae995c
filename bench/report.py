"""report.md and bench.png from results.json (bench/run.py report). Needs matplotlib (.venv-bench)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from targets import dns_reference, saturated  # noqa: E402

ORDER = ("plain", "standard", "ip_transparency", "dsr_router_nat", "dsr_origin_nat")
LABEL = {
    "plain": "plain routing, no nginx (limit)",
    "standard": "standard nginx UDP proxy",
    "ip_transparency": "IP transparency",
    "dsr_router_nat": "DSR router NAT",
    "dsr_origin_nat": "DSR origin NAT",
}


HTTP_ORDER = ("plain", "standard", "standard_keepalive", "haproxy", "ip_transparency", "haproxy_transparent")
HTTP_LABEL = {
    "plain": "plain routing (limit)",
    "standard": "standard nginx reverse proxy",
    "standard_keepalive": "standard nginx, upstream keepalive",
    "haproxy": "HAProxy, standard (peer)",
    "ip_transparency": "nginx IP transparency",
    "haproxy_transparent": "HAProxy usesrc clientip (peer)",
}
VM_ORDER = ("plain", "standard", "dsr_router_nat", "dsr_origin_nat", "ipvs_dr")
VM_LABEL = dict(LABEL, plain="plain, client -> upstream (limit)", ipvs_dr="IPVS direct routing (peer)")
COLORS = {"plain": "grey", "standard": "tab:red", "ip_transparency": "tab:orange", "dsr_router_nat": "tab:blue",
          "dsr_origin_nat": "tab:green", "ipvs_dr": "black", "standard_keepalive": "salmon", "haproxy": "tab:purple",
          "haproxy_transparent": "tab:pink"}


def _f(value, fmt="%.2f"):
    return "-" if value is None else fmt % value


def _drops(r):
    """The drop counters that moved in a run that lost queries ("" when nothing was lost)."""
    if not r["lost"]:
        return ""
    return ", ".join("%s %d" % kv for kv in sorted((r.get("drops") or {}).items())) or "none of the counters moved"


def _cpu_ratio(r, reference):
    """r's proxy CPU per query over the reference run's at the same offered load (reference: {load: run})."""
    ref = reference.get(r["offered_qps"])
    return r["proxy_cpu_ms_per_1k"] / ref["proxy_cpu_ms_per_1k"] if ref and ref["proxy_cpu_ms_per_1k"] else None


def targets_table(targets):
    lines = ["| target | measured | bound | status | detail |", "|---|---|---|---|---|"]
    for t in targets:
        value = "-" if t["value"] is None else "%s %s" % (t["value"], t["unit"])
        detail = t["reason"] if t["status"] == "not measured" else t["detail"]
        lines.append("| %s | %s | %s | **%s** | %s |" % (t["description"], value, t["bound"], t["status"], detail))
    return lines


def dns_table(dp):
    methods = dp["dns"]["methods"]
    lines = ["| method | offered q/s | answered q/s | lost | p50 ms | p99 ms | proxy CPU ms / 1000 q | = nginx + NAPI | vs standard "
             "| machine busy | drops counted (when lost) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    std = {r["offered_qps"]: r for r in methods.get("standard", [])}
    for m in ORDER:
        for r in methods.get(m, []):
            split = "%.1f + %.1f" % (1e6 * r["proxy_cgroup_s"] / r["sent"], 1e6 * r["proxy_napi_s"] / r["sent"]) if r["sent"] else "-"
            lines.append("| %s | %d | %.0f | %d | %s | %s | %s | %s | %s | %d %% | %s |" % (
                LABEL[m] + (" (saturated)" if m == "standard" and saturated(r) else ""), r["offered_qps"],
                r["completed"] / float(r["run_s"] or 1), r["lost"], _f(r["latency_p50_ms"]), _f(r["latency_p99_ms"]),
                _f(r["proxy_cpu_ms_per_1k"], "%.1f"), split, _f(_cpu_ratio(r, std), "%.2fx"), 100 * r["machine_busy_share"],
                _drops(r)))
    return lines


def http_table(dp):
    lines = ["| path | requests/s | p50 ms | p99 ms | errors | proxy CPU ms / 1000 req | upstream saw |",
             "|---|---|---|---|---|---|---|"]
    for m in HTTP_ORDER:
        r = dp["http"]["methods"].get(m)
        if r:
            lines.append("| %s | %.0f | %s | %s | %s | %s | %s |" % (
                HTTP_LABEL[m], r["rps"], _f(r["latency_p50_ms"]), _f(r["latency_p99_ms"]),
                ("%d non-2xx %s" % (r["non_2xx"], r["socket_errors"])).strip(), _f(r["proxy_cpu_ms_per_1k"], "%.3f"),
                r.get("upstream_saw", "")))
    return lines


def vm_table(vp):
    lines = ["| path | offered q/s | answered q/s | lost | p50 ms | p99 ms | director CPU ms / 1000 q | = nginx + NAPI "
             "| vs IPVS-DR | guest busy |", "|---|---|---|---|---|---|---|---|---|---|"]
    peer = {r["offered_qps"]: r for r in vp["paths"].get("ipvs_dr", {}).get("runs", [])}
    for m in VM_ORDER:
        for r in vp["paths"].get(m, {}).get("runs", []):
            ratio = _cpu_ratio(r, peer) if m != "plain" else None
            lines.append("| %s | %d | %.0f | %d | %s | %s | %s | %s | %s | %d %% |" % (
                VM_LABEL[m] + (" (saturated)" if saturated(r) else ""), r["offered_qps"],
                r["completed"] / float(r["run_s"] or 1), r["lost"], _f(r["latency_p50_ms"]), _f(r["latency_p99_ms"]),
                _f(r["proxy_cpu_ms_per_1k"], "%.1f"),
                "%.1f + %.1f" % (1e6 * r["proxy_nginx_s"] / r["sent"], 1e6 * r["proxy_napi_s"] / r["sent"]) if r["sent"] else "-",
                _f(ratio, "%.2fx"), 100 * r["machine_busy_share"]))
    return lines


def tuning_table(dp):
    t = dp.get("tuning")
    if not t:
        return []
    methods = dp["dns"]["methods"]
    base = {r["offered_qps"]: r for r in methods.get("dsr_router_nat", [])}
    lines = ["| DSR router NAT | offered q/s | answered q/s | lost | p50 ms | p99 ms | proxy CPU ms / 1000 q | vs defaults "
             "| drops counted (when lost) |", "|---|---|---|---|---|---|---|---|---|"]

    def row(label, r, reference):
        return "| %s | %d | %.0f | %d | %s | %s | %s | %s | %s |" % (
            label, r["offered_qps"], r["completed"] / float(r["run_s"] or 1), r["lost"], _f(r["latency_p50_ms"]),
            _f(r["latency_p99_ms"]), _f(r["proxy_cpu_ms_per_1k"], "%.1f"), _f(_cpu_ratio(r, reference), "%.2fx"), _drops(r))
    for name in ["defaults"] + sorted(t.get("variants", {})):
        runs = methods.get("dsr_router_nat" if name == "defaults" else "dsr_router_nat_" + name, [])
        label = "role defaults" if name == "defaults" else t["variants"][name]
        lines += [row(label, r, base) for r in runs]
    origin = {r["offered_qps"]: r for r in methods.get("dsr_origin_nat", [])}
    for name in sorted(t.get("variants", {})):
        for r in methods.get("dsr_origin_nat_" + name, []):
            ref = origin.get(r["offered_qps"])
            lines.append(row("DSR origin NAT, %s (vs origin NAT's defaults: lost %s)" % (
                t["variants"][name], ref["lost"] if ref else "-"), r, origin))
    lines += ["", "| listen | reloads | during dnsperf at | sent | lost | lost without reloads (same load) |",
              "|---|---|---|---|---|---|"]
    for name in ["default"] + sorted(t.get("variants", {})):
        r = t.get("reload_" + name)
        if r:
            lines.append("| %s | %d in %d s | %d q/s | %d | %d | %s |" % (
                "role defaults" if name == "default" else t["variants"][name], r["reloads"], r["seconds"],
                r["offered_qps"], r["sent"], r["lost"],
                "%d of %d" % (r["control_lost"], r["control_sent"]) if "control_lost" in r else "not measured"))
    return lines


def peers_table(peers):
    lines = ["| nginx method | peer | where | result (ratio nginx / peer) |", "|---|---|---|---|"]
    for p in peers:
        labels = HTTP_LABEL if p.get("where") == "lab" else VM_LABEL
        lines.append("| %s | %s | %s | %s |" % (
            labels.get(p.get("method"), p.get("method", "-")), labels.get(p.get("peer"), p.get("peer", "-")),
            {"vm": "qemu VM, Debian kernel (DNS)", "lab": "container lab (HTTP)"}.get(p.get("where"), "-"), p["summary"]))
    return lines


def cp_table(cp, vm):
    lines = ["| upstreams | module apply s | no-change re-run s | one `nft` process per rule s | one `tc` process per rule s | speed-up vs tc | vs nft |",
             "|---|---|---|---|---|---|---|"]
    for n, v in sorted(cp["counts"].items(), key=lambda kv: int(kv[0])):
        lines.append("| %s | %.3f | %.3f | %.3f | %.3f | %.2fx | %.2fx |" % (
            n, v["module_apply_s"], v["module_rerun_s"], v["per_process_nft_s"], v["per_process_tc_s"],
            v["speedup_vs_tc_processes"], v["speedup_vs_nft_processes"]))
    if vm and vm.get("speedup") is not None:
        lines += ["", "In the qemu VM (Debian kernel %s with act_nat, TCG emulation, %d upstreams): module with the tc backend "
                  "%.2f s, no-change re-run %.2f s, the article's %d `tc filter ... action nat` processes %.2f s: %.1fx."
                  % (vm["kernel"], vm["n"], vm["module_apply_s"], vm["module_rerun_s"], vm["n"], vm["per_process_s"], vm["speedup"])]
    elif vm:
        lines += ["", "VM comparison not measured: %s" % vm.get("reason")]
    return lines


def pp_table(pp):
    lines = ["| chain | rules | delivered pkt / CPU-s (median) | range | pkt/s wall (median) | vs forward | correct rewrite |",
             "|---|---|---|---|---|---|---|"]
    fwd = pp["chains"]["forward"]["pps_cpu_median"]
    for kind in ("forward", "empty_egress", "linear_1", "hash_1", "rewrite_1", "rewrite_4096", "linear_4096"):
        c = pp["chains"].get(kind)
        if not c:
            continue
        lines.append("| %s | %d | %.0f | %.0f-%.0f | %.0f | %.3f | %s |" % (
            kind, c["rules"], c["pps_cpu_median"], c["pps_cpu_range"][0], c["pps_cpu_range"][1], c["pps_wall_median"],
            c["pps_cpu_median"] / fwd, "yes" if c["rewrite_correct"] else "NO"))
    return lines


def _dns_row(row, runs_by_path, labels, xlabel, titles, no_cpu=()):
    """One row of DNS plots on shared axes: CPU per 1000 queries, p50/p99 latency, answered q/s per offered load.
    Peers (IPVS) are dashed squares beside the nginx methods' lines."""
    for m, runs in runs_by_path.items():
        x = [r["offered_qps"] for r in runs]
        style = "s--" if m == "ipvs_dr" else "o-"
        if m not in no_cpu:
            row[0].plot(x, [r["proxy_cpu_ms_per_1k"] for r in runs], style, color=COLORS[m], label=labels[m])
        row[1].plot(x, [r["latency_p50_ms"] for r in runs], style, color=COLORS[m], label=labels[m] + " p50")
        row[1].plot(x, [r["latency_p99_ms"] for r in runs], "x:", color=COLORS[m])
        row[2].plot(x, [r["completed"] / float(r["run_s"] or 1) for r in runs], style, color=COLORS[m], label=labels[m])
    for ax, title in zip(row, titles):
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    row[1].set_yscale("log")
    row[0].legend(fontsize=8)
    row[2].legend(fontsize=8)


def plot(out, data):
    dp, cp, pp = data.get("dataplane"), data.get("controlplane"), data.get("perpacket")
    fig, axes = plt.subplots(3, 3, figsize=(17, 14))
    colors = COLORS
    if dp:
        methods = dp["dns"]["methods"]
        _dns_row(axes[0], {m: methods.get(m, []) for m in ORDER}, LABEL, "offered load (DNS queries/s)",
                 ("proxy CPU per 1000 queries (ms)", "latency p50 (solid) and p99 (dotted), ms",
                  "answered queries/s (dashed: standard saturates)"))
        sat = dns_reference(dp)[1]
        for ax in axes[0]:
            if sat:
                ax.axvline(sat, color="tab:red", alpha=0.3, linestyle="--")
        loads = [r["offered_qps"] for r in methods.get("standard", [])]
        if loads:
            axes[0][2].plot(loads, loads, color="black", alpha=0.2, label="offered")
            axes[0][2].legend(fontsize=8)
    if cp:
        ns = sorted(int(n) for n in cp["counts"])
        c = cp["counts"]
        ax = axes[1][0]
        ax.plot(ns, [c[str(n)]["module_apply_s"] for n in ns], "o-", label="tc_nat_filter apply (module process)")
        ax.plot(ns, [c[str(n)]["module_rerun_s"] for n in ns], "s--", label="tc_nat_filter no-change re-run")
        ax.plot(ns, [c[str(n)]["per_process_tc_s"] for n in ns], "^-", label="one tc process per upstream")
        ax.plot(ns, [c[str(n)]["per_process_nft_s"] for n in ns], "v-", label="one nft process per upstream")
        ax.axhline(1.0, color="black", alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("upstreams")
        ax.set_title("control plane: apply time (s), host, nftables backend")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if pp:
        kinds = [k for k in ("forward", "empty_egress", "linear_1", "hash_1", "rewrite_1", "rewrite_4096", "linear_4096")
                 if k in pp["chains"]]
        names = {"forward": "forward\n(no rewrite)", "empty_egress": "empty\negress hook", "linear_1": "plain\nrule",
                 "hash_1": "hash\nmap", "rewrite_1": "module\n1 rule", "rewrite_4096": "module\n4096 rules",
                 "linear_4096": "linear\n4096 rules"}
        ax = axes[1][1]
        vals = [pp["chains"][k]["pps_cpu_median"] / 1000 for k in kinds]
        ax.bar([names[k] for k in kinds], vals,
               color=["tab:blue" if k.startswith("rewrite") else "tab:purple" if k == "linear_4096" else "grey" for k in kinds])
        for i, v in enumerate(vals):
            ax.text(i, v, "%.0f" % v, ha="center", va="bottom", fontsize=8)
        ax.set_title("per-packet: forwarded kpkt per CPU-second")
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    if dp and dp["http"]["methods"]:
        ax = axes[1][2]
        names = [m for m in HTTP_ORDER if m in dp["http"]["methods"]]
        rps = [dp["http"]["methods"][m]["rps"] for m in names]
        short = {"plain": "plain\nrouting", "standard": "nginx\nstandard", "standard_keepalive": "nginx std.\nkeepalive",
                 "haproxy": "HAProxy\nstandard", "ip_transparency": "nginx IP\ntransparency",
                 "haproxy_transparent": "HAProxy\nusesrc\nclientip"}
        ax.bar([short[m] for m in names], rps,
               color=[colors[m] for m in names])
        for i, v in enumerate(rps):
            cpu = dp["http"]["methods"][names[i]]["proxy_cpu_ms_per_1k"]
            ax.text(i, v, "%.0f req/s\n%.1f ms CPU/1k" % (v, cpu or 0), ha="center", va="bottom", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title("HTTP (wrk -c32): requests/s, nginx and HAProxy, same lab")
        ax.grid(alpha=0.3, axis="y")
    vp = data.get("vmpeers") or {}
    if vp.get("paths"):
        _dns_row(axes[2], {m: vp["paths"].get(m, {}).get("runs", []) for m in VM_ORDER}, VM_LABEL,
                 "offered load (DNS queries/s), qemu VM (TCG): only ratios count",
                 ("VM: director CPU per 1000 queries (ms), nginx methods and IPVS-DR",
                  "VM: latency p50 (solid) and p99 (dotted), ms", "VM: answered queries/s"), no_cpu=("plain",))
    else:
        for ax in axes[2]:
            ax.set_axis_off()
        axes[2][1].text(0.5, 0.5, "VM peers not measured: %s" % vp.get("reason", "-"), ha="center", wrap=True)
    m = data.get("machine") or {}
    fig.suptitle("netops.ip_transparency bench, %s, %s (%s CPUs), kernel %s; load avg at start %s"
                 % (m.get("date_utc"), m.get("cpu"), m.get("cpus"), m.get("kernel"), m.get("loadavg_at_start")), fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "bench.png"), dpi=90)
    plt.close(fig)


def write(out, data):
    plot(out, data)
    m = data.get("machine") or {}
    dp, cp, pp, vm = data.get("dataplane"), data.get("controlplane"), data.get("perpacket"), data.get("vm")
    timing = data.get("timing") or {}
    lines = [
        "# netops.ip_transparency benchmark",
        "",
        "Run of %s on `%s`: %s, %s CPUs (%s), %s GiB, kernel %s. Load average at start %s%s."
        % (m.get("date_utc"), m.get("hostname"), m.get("os"), m.get("cpus"), m.get("cpu"), m.get("memory_gib"),
           m.get("kernel"), m.get("loadavg_at_start"),
           ("; whole bench %.0f s (%s)" % (timing["total_s"], ", ".join("%s %s" % (k[:-2].replace("_", " "), v) for k, v in sorted(
               timing.items()) if k != "total_s"))) if timing.get("total_s") else ""),
        "",
        "The machine is shared: absolute figures are noise, the ratios between methods measured in the same run are the "
        "result. 'machine busy' is the share of all CPUs busy during a run (ours and everybody else's).",
        "",
        "![bench](bench.png)",
        "",
        "## Targets",
        "",
    ] + targets_table(data["targets"]) + [""]
    vp = data.get("vmpeers") or {}
    if data.get("peers"):
        lines += [
            "## Beside the peers: IPVS-DR (DNS) and HAProxy (HTTP)",
            "",
            "What users would pick instead, in the same run at the same offered loads. The ratio is the nginx method's "
            "figure over the peer's: above 1 for CPU or latency means nginx costs more or answers later, below 1 for "
            "requests/s means it serves fewer. IPVS runs in the kernel and never wakes a process; its figures are "
            "the floor any user-space proxy is measured against.",
            "",
        ] + peers_table(data["peers"]) + [""]
    if vp.get("paths"):
        lines += [
            "## DNS in the qemu VM: the nginx methods and IPVS-DR on one L2 segment",
            "",
            "This host's kernel has no IPVS, so IPVS runs where it exists: the qemu VM of tests/vm (Debian kernel %s, "
            "%d vCPUs under TCG emulation, %d upstreams). The nginx methods are measured in the same VM run on the same "
            "topology (network namespaces on one bridge; nginx %s from the lab's image), so only the ratios mean "
            "anything. dnsperf %s. IPVS: `ipvsadm -A -u VIP:53 -s rr -o` (one-packet scheduling) with `-g` real "
            "servers, which hold the VIP on lo with arp_ignore=1/arp_announce=2. Director CPU = every nginx task + the "
            "threaded-NAPI kthread of the director's interface (IPVS, forwarding and the rewrite run there)."
            % (vp["kernel"], vp["cpus"], vp["upstreams"], next((t.split("/")[-1] for t in vp.get("tools", []) if "nginx" in t), "?"),
               vp["dnsperf"]),
            "",
        ] + vm_table(vp) + [""]
    elif vp:
        lines += ["## DNS in the qemu VM beside IPVS-DR", "", "Not measured: %s" % vp.get("reason"), ""]
    if dp:
        sat = dns_reference(dp)[1]
        lines += [
            "## DNS over UDP (dnsperf from the client, same offered loads for every method)",
            "",
            "dnsperf %s. Proxy CPU = the proxy container's cgroup (nginx) + the threaded-NAPI kthreads of the proxy's two "
            "veth devices (every packet the proxy receives: delivery, forwarding, nftables, the egress rewrite). The standard "
            "proxy saturates at %s (answered < %d %% of offered or > 0.1 %% lost). plain = upstream1 directly, routed "
            "through the proxy, no nginx. DSR origin NAT: the rewrite runs on the upstreams, not on the proxy, so it is "
            "not in the proxy's CPU (that is the method's point). Caveat: each packet that finds a NAPI thread idle wakes "
            "it, which costs far more than forwarding it (about 1 us, per-packet section): the NAPI part is inflated in "
            "proportion to the packets the proxy receives (2 per query for all methods but origin NAT, 1 for it); "
            "the nginx part is exact."
            % (dp["dns"]["dnsperf"], ("%d q/s" % sat) if sat else "no load of the sweep", 97),
            "",
        ] + dns_table(dp) + [
            "",
            "## HTTP (wrk from the client)",
            "",
            "wrk %s; plain = upstream1 directly through the proxy's routing, standard = nginx reverse proxy on :8080 "
            "(bench configuration; :8083 the same with `keepalive 32` to the upstreams, which IP transparency cannot "
            "use: a kept connection carries one client's address), IP transparency = the role's service on :80. HAProxy "
            "(%s, as many threads as nginx has workers) runs on the proxy while IP transparency is applied: :8081 "
            "standard, :8082 `source 0.0.0.0 usesrc clientip`, whose replies take the method's return path. "
            "'upstream saw' is the client address the upstream's page reports."
            % (dp["http"]["wrk"], next((t for t in dp.get("tools", []) if "HAProxy" in t), "HAProxy")),
            "",
        ] + http_table(dp) + [""]
        if dp.get("tuning"):
            lines += [
                "## Tuning: UDP listen parameters and workers (DSR router NAT, and origin NAT's buffer)",
                "",
                "The role's UDP listen parameters (`nginx_transparent_proxy_udp_reuseport`, `_udp_rcvbuf`), each applied "
                "with the method's playbook and swept at the same loads as the methods; then dnsperf at a steady load while "
                "nginx is reloaded (`systemctl reload nginx`, what the health checker does when an upstream changes "
                "state). With `reuseport` each worker has a socket of its own; the reload test shows whether what is "
                "queued in them survives the workers' replacement. The nginx.conf rows are bench-only edits of the "
                "package's file (the role leaves it alone), put back afterwards. Origin NAT's proxy receives through "
                "the same kind of socket: its receive-buffer variant is at the end.",
                "",
            ] + tuning_table(dp) + [""]
        lines += ["Lab set-up times (s): " + ", ".join("%s %.0f" % kv for kv in sorted(dp["setup_s"].items())), ""]
    else:
        lines += ["## Data plane", "", "Not measured: the lab phase did not run.", ""]
    if cp:
        lines += [
            "## Control plane: tc_nat_filter apply time (%s)" % cp["where"],
            "",
            "Module process (`python tc_nat_filter.py args.json`, as Ansible runs it on the target, without Ansible's "
            "connection overhead), backend auto = nftables on this kernel (no act_nat); medians of %d. One process per "
            "rule: a shell loop of `nft add rule netdev ... ip saddr X udp sport 53 ip saddr set VIP`, and of the "
            "article's `tc filter add ... u32 match ip src X match ip sport 53` WITHOUT `action nat egress X VIP` (this "
            "kernel cannot load act_nat; the VM line below runs the real commands)." % cp["repeat"],
            "",
        ] + cp_table(cp, vm) + [""]
    if pp:
        lines += [
            "## Per-packet cost as rules grow (%s)" % pp["where"],
            "",
            "%s. src -> mid (forwards; tc_nat_filter's rewrite on the egress of its outgoing veth) -> sink (counts, "
            "drops). The blaster sends from the LAST of the N upstream addresses. veth forwards inside the sender's "
            "sendmmsg(), so packets per CPU-second of the sending thread is the inverse per-packet cost of the whole path "
            "(ksoftirqd took %.1f %% of it). empty_egress (an empty netdev egress chain), linear_1 (one plain rule, no map) "
            "and hash_1 (the module's rule over a hash map) split the rewrite's cost into the hook, the mangle and the "
            "lookup. linear_4096 is the article's shape for contrast (one rule per upstream)."
            % (pp["method"], 100 * max(c["ksoftirqd_share"] or 0 for c in pp["chains"].values())),
            "",
        ] + pp_table(pp) + [""]
    lines += [
        "## What was measured where",
        "",
        "- Data plane: the container lab (systemd containers on docker bridges, this host's kernel), one run, same hosts. "
        "The three methods are set up by the collection's playbooks; plain routing and the standard proxy by "
        "bench/dataplane.py (they are not the roles' job) and removed afterwards.",
        "- Control plane and per-packet cost: this host's kernel in network namespaces, nftables backend (what `auto` "
        "picks here). The tc backend and the article's real `tc ... action nat` commands only run in the qemu VM "
        "(tests/vm, Debian's kernel under TCG emulation, 15-25x slower, Python imports over 9p even more): its figure is "
        "a same-VM ratio only.",
        "- Peers: HAProxy in the container lab (HTTP), IPVS-DR in the qemu VM (DNS; this host's kernel has no IPVS) "
        "beside the nginx methods measured in the same VM run.",
        "- Not measured: anything on hardware NICs; the tc backend's per-packet cost (no act_nat on this kernel).",
        "",
    ]
    with open(os.path.join(out, "report.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
