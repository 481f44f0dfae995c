"""bench/targets.py: the peers' ratios and the misses' explanations, on synthetic results (no lab, no VM).

The bench itself is not part of `make test` (half an hour on the lab); what it concludes from its figures is
pure arithmetic, checked here so that a report cannot call a target met, or a peer cheaper, by a wrong division.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "bench"))

import targets  # noqa: E402


def run(load, cpu_ms_per_1k, p50, lost=0, drops=None, napi_share=0.3):
    sent = load * 5
    cpu_s = cpu_ms_per_1k * sent / 1e6
    return {"offered_qps": load, "sent": sent, "completed": sent - lost, "lost": lost, "run_s": 5.0,
            "loss_share": lost / float(sent), "latency_p50_ms": p50, "latency_p99_ms": p50 * 4,
            "proxy_cpu_ms_per_1k": cpu_ms_per_1k, "proxy_cpu_s": cpu_s, "proxy_cgroup_s": cpu_s * (1 - napi_share),
            "proxy_napi_s": cpu_s * napi_share, "drops": drops or {}}


def vm(**paths):
    return {"paths": {name: {"runs": runs} for name, runs in paths.items()}}


def test_the_vm_ratios_are_nginx_over_ipvs_at_loads_where_neither_is_saturated():
    peers = targets.peers(None, vm(
        ipvs_dr=[run(250, 200, 1.0), run(500, 100, 1.0), run(1000, 100, 2.0)],
        standard=[run(250, 1000, 2.0), run(500, 600, 3.0), run(1000, 500, 40.0, lost=900)],
        dsr_router_nat=[], dsr_origin_nat=[run(250, 700, 1.5)]))
    by = {p["method"]: p for p in peers}
    std = by["standard"]
    # 1000 q/s lost 18 %: saturated, so only 250 and 500 count
    assert std["cpu_ratio"] == {250: pytest.approx(5.0), 500: pytest.approx(6.0)}
    assert std["p50_ratio"] == {250: pytest.approx(2.0), 500: pytest.approx(3.0)}
    assert std["method_saturates_at"] == 1000
    assert std["answered_ratio_at_top"] == pytest.approx(4100 / 5000.0)
    assert "5.00x-6.00x" in std["summary"] and "saturated from 1000 q/s" in std["summary"]
    assert by["dsr_origin_nat"]["cpu_ratio"] == {250: pytest.approx(3.5)}
    assert "no load where both are unsaturated" in by["dsr_router_nat"]["summary"]


def test_a_vm_that_did_not_run_is_reported_with_its_reason_not_as_a_ratio():
    peers = targets.peers(None, {"reason": "run-in-vm failed (rc 125)"})
    assert peers == [{"name": "vm_ipvs_dr", "where": "vm", "summary": "not measured: run-in-vm failed (rc 125)"}]


def test_http_peers_compare_like_with_like():
    http = {"ip_transparency": {"rps": 10000.0, "proxy_cpu_ms_per_1k": 70.0, "latency_p50_ms": 2.6},
            "haproxy_transparent": {"rps": 12500.0, "proxy_cpu_ms_per_1k": 56.0, "latency_p50_ms": 2.0},
            "standard": {"rps": 11000.0, "proxy_cpu_ms_per_1k": 60.0, "latency_p50_ms": 2.5},
            "haproxy": {"rps": 27500.0, "proxy_cpu_ms_per_1k": 25.0, "latency_p50_ms": 1.0}}
    peers = {p["name"]: p for p in targets.peers({"http": {"methods": http}}, None)}
    assert sorted(peers) == ["http_ip_transparency_vs_haproxy_transparent", "http_standard_vs_haproxy"]
    t = peers["http_ip_transparency_vs_haproxy_transparent"]
    assert (t["rps_ratio"], t["cpu_ratio"], t["p50_ratio"]) == (pytest.approx(0.8), pytest.approx(1.25), pytest.approx(1.3))


def dataplane(standard, router, origin, extra=None):
    methods = {"standard": standard, "dsr_router_nat": router, "dsr_origin_nat": origin}
    methods.update(extra or {})
    return {"dns": {"methods": methods}}


def test_zero_loss_counts_up_to_the_standard_saturation_and_names_the_counters_and_variants():
    std = [run(2000, 70, 0.2), run(4000, 70, 0.3), run(6000, 60, 5.0, lost=300)]
    router = [run(2000, 50, 0.2), run(4000, 40, 0.2), run(6000, 30, 0.3), run(8000, 30, 0.5, lost=99)]
    origin = [run(2000, 40, 0.1), run(4000, 30, 0.2, lost=7, drops={"proxy_udp_RcvbufErrors": 7}), run(6000, 30, 0.2)]
    tuned = [run(2000, 50, 0.2), run(4000, 40, 0.2), run(6000, 30, 0.3), run(8000, 30, 0.5, lost=3)]
    data = dataplane(std, router, origin, {"dsr_router_nat_rcvbuf_max": tuned})
    got = {t["name"]: t for t in targets.evaluate(data, None, None)}
    router_loss, origin_loss = got["dsr_router_nat_zero_loss"], got["dsr_origin_nat_zero_loss"]
    # the standard proxy saturates at 6000 q/s: router NAT's 99 lost at 8000 do not count
    assert (router_loss["value"], router_loss["status"]) == (0, "met")
    assert "rcvbuf_max 0 (at 8000 qps: 3)" in router_loss["detail"]
    assert (origin_loss["value"], origin_loss["status"]) == (7, "not met")
    assert "dropped at: proxy_udp_RcvbufErrors 7" in origin_loss["detail"]


def test_the_cpu_target_splits_the_ratio_into_nginx_and_kernel_parts():
    std = [run(2000, 100, 0.3, napi_share=0.25)]
    router = [run(2000, 80, 0.2, napi_share=0.5)]
    got = {t["name"]: t for t in targets.evaluate(dataplane(std, router, [run(2000, 50, 0.1)]), None, None)}
    cpu = got["dsr_router_nat_proxy_cpu_per_query"]
    assert (cpu["value"], cpu["status"]) == (0.8, "not met")
    # nginx 40 vs 75 ms per 1000 queries, kernel 40 vs 25
    assert "nginx (cgroup) part alone: 2000 qps 0.53x" in cpu["detail"]
    assert "kernel (NAPI) part alone: 2000 qps 1.60x" in cpu["detail"]


def test_a_process_count_ratio_is_explained_by_the_modules_fixed_cost():
    cp = {"startup": {"python_s": 0.01, "ansible_s": 0.1, "pyroute2_s": 0.2},
          "counts": {"1": {"module_apply_s": 0.23, "module_rerun_s": 0.22, "per_process_tc_s": 0.01, "per_process_nft_s": 0.01,
                           "speedup_vs_tc_processes": 0.04, "speedup_vs_nft_processes": 0.04},
                     "1024": {"module_apply_s": 0.33, "module_rerun_s": 0.33, "per_process_tc_s": 1.6, "per_process_nft_s": 2.1,
                              "speedup_vs_tc_processes": 1.6 / 0.33, "speedup_vs_nft_processes": 2.1 / 0.33}}}
    got = {t["name"]: t for t in targets.evaluate(None, cp, None)}
    tc = got["apply_1024_vs_tc_processes"]
    assert tc["status"] == "not met"
    assert "fixed cost is 0.200 s (interpreter 0.010 s, Ansible's module_utils +0.090 s, pyroute2 +0.100 s" in tc["detail"]
    # per upstream beyond the first: (1.6 - 0.01) / (0.33 - 0.23)
    assert "the module is 16x faster" in tc["detail"]
    # 0.2 s of fixed cost is more than a tenth of 1.6 s (tc), not of 2.1 s (nft): there the rules' own time is the miss
    assert "more than a tenth of the per-process loop (0.160 s) on its own" in tc["detail"]
    nft = got["apply_1024_vs_nft_processes"]
    assert "more than a tenth" not in nft["detail"]
    assert "which leaves 0.010 s of a tenth of the per-process loop (0.210 s) for the rules; they took 0.130 s" in nft["detail"]


def test_nothing_measured_is_never_met():
    got = targets.evaluate(None, None, None, None)
    assert got and all(t["status"] == "not measured" for t in got)
