"""playbooks/site.yml's IPv6 glue of dsr_origin_nat (issue 16): when a dsr_origin_nat service has IPv6 upstreams the
upstreams rewrite their IPv6 replies to the proxy's public IPv6 address (dsr_public_address6, else the proxy's), which
must be known and valid before any host changes; with IPv4 upstreams too, the IPv4 address must be known as well.
Run on the controller without the lab, limited to the upstreams, like test_host_groups.py: every case must be
refused before the roles run (an accepted case would change the controller)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
import subprocess

import pytest

from test_host_groups import RENAMED, _ansible_playbook, _failures, _inventory

DUAL = {"name": "dns", "protocol": "udp", "port": 53, "upstreams": ["10.0.0.11", {"address": "fd00:16::11"}]}
V4 = {"name": "dns4", "protocol": "udp", "port": 53, "upstreams": ["10.0.0.11"]}

CASES = [
    # (services, {upstream: variables}, {upstream: parts of its refusal}, the task the refusals come from)
    ([V4], {"web1": {"dsr_public_address6": "203.0.113.10"}, "web2": {"dsr_public_address6": "2001:db8::300::1"},
            "web3": {"dsr_public_address6": "2001:db8:99::10"}},
     {"web1": ["dsr_public_address6 '203.0.113.10'", "IPv6 address", "not an IPv6 address"],
      "web2": ["dsr_public_address6 '2001:db8::300::1'", "not an IPv6 address"]},
     "Check dsr_public_address6"),
    ([V4, DUAL], {"web1": {}},
     {"web1": ["dns (dsr_origin_nat) has IPv6 upstreams", "set dsr_public_address6", "nginx_transparent_proxy_public_address6"]},
     "Check the proxy's public IPv6 address is known when the upstreams rewrite IPv6 replies"),
    # the IPv6 address given, the IPv4 one unknown (the proxy is not in the run)
    ([DUAL], {"web1": {"dsr_public_address6": "2001:db8:99::10"}},
     {"web1": ["rewrite their IPv4 replies", "set dsr_public_address"]},
     "Check the proxy's public IPv4 address is known when the upstreams rewrite both families"),
]


@pytest.mark.parametrize("services, upstreams, refusals, task", CASES, ids=["address6-invalid", "address6-unknown", "address4-unknown"])
def test_the_public_addresses_of_the_ipv6_rewrite_are_checked_before_any_change(tmp_path, services, upstreams, refusals, task):
    inventory = _inventory(tmp_path)
    data = json.loads(open(inventory).read())
    data["all"]["children"]["lb"]["hosts"]["lb1"] = {"nginx_transparent_proxy_services": services}
    data["all"]["children"]["web"]["hosts"] = upstreams
    open(inventory, "w").write(json.dumps(data))
    proc = _ansible_playbook(tmp_path, inventory, "dsr_origin_nat", *RENAMED + ["--limit", "web"])
    failed, ran = _failures(proc.stdout)
    print(proc.stdout[-4000:])
    assert set(failed) == set(refusals), failed
    for host, parts in refusals.items():
        for part in parts:
            assert part in failed[host], failed[host]
    assert set(ran[task]) == set(upstreams), "not every upstream was checked"
    assert not [name for name in ran if name.startswith("netops.ip_transparency.origin_nat :") and "Rewrite" in name]


def _controller_ipv4():
    """A global IPv4 address of this host (the upstreams of these runs are the controller), or None."""
    try:
        out = subprocess.run(["ip", "-o", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return None
    found = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", out)
    return found.group(1) if found else None


def test_an_upstream_rewrites_the_families_of_the_addresses_it_holds(tmp_path):
    """issue 16 review: decided per upstream host, not for the whole group. The upstream (the controller) holds the
    service's IPv4 upstream only, so it is not asked for the proxy's IPv6 address (which nobody gives): it goes on to
    the argument spec check, where a bad origin_nat_backend stops it before any change."""
    own = _controller_ipv4()
    if own is None:
        pytest.skip("the controller has no global IPv4 address")
    inventory = _inventory(tmp_path)
    data = json.loads(open(inventory).read())
    data["all"]["children"]["lb"]["hosts"]["lb1"] = {"nginx_transparent_proxy_services": [
        {"name": "dns", "protocol": "udp", "port": 53, "upstreams": [own, "fd00:16::99"]}]}
    data["all"]["children"]["web"]["hosts"] = {"web1": {"dsr_public_address": "203.0.113.10", "origin_nat_backend": "bogus"}}
    open(inventory, "w").write(json.dumps(data))
    proc = _ansible_playbook(tmp_path, inventory, "dsr_origin_nat", *RENAMED + ["--limit", "web"])
    failed, ran = _failures(proc.stdout)
    print(proc.stdout[-4000:])
    assert "web1" not in ran.get("Check the proxy's public IPv6 address is known when the upstreams rewrite IPv6 replies", [])
    assert "web1" in failed and "web1" in ran["Check the upstream's variables against the roles' argument specs"], failed
    assert "origin_nat_backend" in proc.stdout
