"""playbooks/site.yml with a keepalived pair (issue 15): when the proxy group has the HA variables, the first play
checks the pair's input before any host changes. Run on the controller without the lab (local hosts, groups `lb` and
`web` as in test_host_groups.py): each refusal names what is wrong and comes before any change."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from test_host_groups import RENAMED, _ansible_playbook, _failures, _inventory

HA = {"proxy_ha_public_vip": "192.0.2.10", "proxy_ha_private_vip": "198.51.100.1"}
DNS = {"name": "dns_udp", "protocol": "udp", "port": 53, "upstreams": ["198.51.100.11"]}


def _run(tmp_path, proxies, lb_vars):
    inventory = _inventory(tmp_path)
    data = json.loads(open(inventory).read())
    data["all"]["children"]["lb"]["hosts"] = {name: {} for name in proxies}
    data["all"]["children"]["lb"]["vars"] = lb_vars
    open(inventory, "w").write(json.dumps(data))
    proc = _ansible_playbook(tmp_path, inventory, "site", *RENAMED + ["--limit", ",".join(proxies)])
    print(proc.stdout[-4000:])
    failed, ran = _failures(proc.stdout)
    return proc, failed, ran


def test_a_pair_of_one_proxy_is_refused_before_any_change(tmp_path):
    proc, failed, ran = _run(tmp_path, ["lb1"], dict(HA, nginx_transparent_proxy_services=[DNS]))
    assert proc.returncode != 0
    assert "a VRRP pair is exactly two hosts" in failed["lb1"], failed
    assert "holds 1 hosts (lb1)" in failed["lb1"], failed
    # refused in the first play: nginx's own checks and anything after them never ran
    assert not any("nginx_transparent_proxy :" in task for task in ran), sorted(ran)
    assert any("proxy_ha :" in task for task in ran), sorted(ran)


def test_a_service_listening_on_one_address_is_refused(tmp_path):
    """Not on the VIP (absent from the backup), not on any other address (the track script would never pass)."""
    services = [DNS, dict(DNS, name="dns_vip", port=5353, listen_address="192.0.2.10"),
                dict(DNS, name="dns_own", port=5354, listen_address="192.0.2.11")]
    proc, failed, ran = _run(tmp_path, ["lb1", "lb2"], dict(HA, nginx_transparent_proxy_services=services))
    assert proc.returncode != 0
    for host in ("lb1", "lb2"):
        assert failed[host].startswith("dns_vip, dns_own: a pair of proxies serves on its floating address 192.0.2.10"), failed


def test_upstreams_routing_via_anything_but_the_floating_gateway_are_refused(tmp_path):
    inventory = _inventory(tmp_path, web_vars={"upstream_default_route_gateway": "198.51.100.2"})
    data = json.loads(open(inventory).read())
    data["all"]["children"]["lb"]["hosts"] = {"lb1": {}, "lb2": {}}
    data["all"]["children"]["lb"]["vars"] = dict(HA, nginx_transparent_proxy_services=[DNS])
    open(inventory, "w").write(json.dumps(data))
    proc = _ansible_playbook(tmp_path, inventory, "site", *RENAMED + ["--limit", "web1"])
    print(proc.stdout[-4000:])
    failed, _ran = _failures(proc.stdout)
    assert "upstream_default_route_gateway '198.51.100.2' is not the pair's floating gateway proxy_ha_private_vip '198.51.100.1'" in failed["web1"], failed


def test_nginx_public_address_other_than_the_vip_is_refused(tmp_path):
    lb_vars = dict(HA, nginx_transparent_proxy_services=[DNS], nginx_transparent_proxy_public_address="192.0.2.99")
    proc, failed, ran = _run(tmp_path, ["lb1", "lb2"], lb_vars)
    assert proc.returncode != 0
    assert "nginx_transparent_proxy_public_address '192.0.2.99' differs from the pair's floating public address" in failed["lb1"], failed


def test_without_the_ha_variables_two_proxies_work_on_their_own(tmp_path):
    """No proxy_ha_public_vip: no pair checks run (the nginx preflight then refuses these local hosts for their own
    reasons, which shows the run went past the pair's checks)."""
    proc, failed, ran = _run(tmp_path, ["lb1", "lb2"], {"nginx_transparent_proxy_services": [DNS]})
    assert ran.get("Decide whether the proxies are a keepalived pair") == {"lb1", "lb2"}, sorted(ran)
    assert not any("proxy_ha :" in task for task in ran), sorted(ran)
    assert any("nginx_transparent_proxy :" in task for task in ran), sorted(ran)
    assert not any("VRRP" in message for message in failed.values()), failed
