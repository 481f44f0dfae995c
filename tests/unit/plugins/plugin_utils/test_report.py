"""Unit tests of the report (plugins/plugin_utils/_report.py): the findings and the traces as text."""

import copy

from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _checks as checks
from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _report as report
from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _trace as trace

from .troubleshoot_fakes import HEALTHY, UPSTREAMS, config, lab, probe


def test_a_healthy_lab_is_reported_healthy():
    findings = checks.diagnose(config(), lab(), [{"host": "proxy", "target": u, "ok": True, "summary": "1 received"} for u in UPSTREAMS])
    text = report.report(config(), findings)
    assert text.startswith("Troubleshooting report: method ip_transparency, VIP 192.168.99.10, client 192.168.99.1\n")
    assert text.endswith("Summary: healthy - %d checks passed" % len(findings))
    assert "\nproxy      ok: " in text and "FAILED" not in text


def test_a_problem_is_reported_with_its_evidence_fix_and_summary():
    hosts = lab()
    hosts["proxy"]["facts"]["rules"].pop(1)
    findings = checks.diagnose(config(), hosts)
    text = report.report(config(), findings)
    assert "\nERROR   proxy: no policy routing rule sends the marked replies (fwmark 0x1) to table 100" in text
    assert "          evidence: ip rule: 0: from all lookup local\n" in text
    assert "          fix: ip rule add priority 100 fwmark 1 lookup 100" in text
    assert "; FAILED: fwmark_rule" in text
    assert text.endswith("Summary: 1 error(s), 0 warning(s) on proxy")


def test_traces_are_reported_hop_by_hop_and_a_lost_probe_is_summed_up():
    healthy = trace.trace(config(), [probe()], HEALTHY)
    text = report.report(config(), [], healthy)
    assert "Packet trace, probe http 192.168.99.10:80 from client (192.168.99.1:40000): answered" in text
    assert "  1. request sent by the client" in text and "client     eth0   Out 192.168.99.1:40000 > 192.168.99.10:80 Flags [S] length 0" in text
    assert "  OK complete: the reply reached the client from 192.168.99.10" in text
    assert text.endswith("Summary: healthy - 0 checks passed, every probe answered")
    lost = copy.deepcopy(HEALTHY)
    lost["proxy"] = [line for line in lost["proxy"] if "length 240" not in line]
    lost["client"] = [line for line in lost["client"] if "length 240" not in line]
    text = report.report(config(), [], trace.trace(config(), [probe()], lost))
    assert "  LOST disappeared after" in text
    assert text.endswith("Summary: 0 error(s), 0 warning(s) on no host; 1 of 1 probe(s) lost (at proxy)")


def test_a_mixed_proxy_report_says_which_method_each_service_uses():
    from .troubleshoot_fakes import dns_capture, dns_probe, mixed_config, mixed_lab
    cfg = mixed_config("dsr_origin_nat")
    findings = checks.diagnose(cfg, mixed_lab("dsr_origin_nat"))
    text = report.report(cfg, findings, trace.trace(cfg, [dns_probe("dsr_origin_nat")], dns_capture("dsr_origin_nat")))
    assert text.startswith("Troubleshooting report: methods ip_transparency, dsr_origin_nat, VIP 192.168.99.10, client 192.168.99.1\n")
    assert "\nServices: http (tcp/80): ip_transparency; dns_udp (udp/53): dsr_origin_nat\n" in text
    assert "Packet trace, probe dns 192.168.99.10:53 from client (192.168.99.1:40016): answered [service dns_udp, method dsr_origin_nat]" in text


def test_a_single_method_report_names_the_method_of_its_services_too():
    text = report.report(config(), [])
    assert text.startswith("Troubleshooting report: method ip_transparency, VIP 192.168.99.10, client 192.168.99.1\n")
    assert "\nServices: http (tcp/80): ip_transparency; dns_udp (udp/53): ip_transparency\n" in text
