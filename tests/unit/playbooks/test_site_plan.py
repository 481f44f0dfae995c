"""playbooks/site.yml works out, from the proxy's services and their methods (issue 14), what each upstream gets: the
route back via the proxy for every reply, or only for the Method 1 / 2a services' source ports when a 2b service is
there too, and the origin NAT of the 2b services' ports. The per-method playbooks are site.yml with their method as
the default. Run on the controller without the lab: the plan is printed before the upstream's own checks (which
refuse these local hosts for lack of a gateway), with the run limited to the upstream."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

import pytest

from test_host_groups import RENAMED, _ansible_playbook, _failures, _inventory

HTTP = {"name": "http", "protocol": "tcp", "port": 80, "http": True, "upstreams": ["10.0.0.11"]}
DNS_TCP = {"name": "dns_tcp", "protocol": "tcp", "port": 53, "upstreams": ["10.0.0.11"]}
DNS = {"name": "dns_udp", "protocol": "udp", "port": 53, "upstream_port": 5353, "upstreams": ["10.0.0.11"]}


def _with(service, method):
    return dict(service, method=method)


CASES = [
    # (playbook, services, route back, rewrite)
    ("site", [HTTP, DNS_TCP, DNS], "every reply (default route)", "none"),
    ("site", [HTTP, _with(DNS, "dsr_router_nat")], "every reply (default route)", "none"),
    ("site", [HTTP, DNS_TCP, _with(DNS, "dsr_origin_nat")], "replies from tcp/80, tcp/53 (ip rule by source port)", "udp/5353"),
    ("site", [_with(DNS, "dsr_origin_nat")], "none", "udp/5353"),
    ("ip_transparency", [HTTP, _with(DNS, "dsr_origin_nat")], "replies from tcp/80 (ip rule by source port)", "udp/5353"),
    # a DSR default leaves out the TCP services that name no method, and keeps those that do
    ("dsr_origin_nat", [HTTP, DNS_TCP, DNS], "none", "udp/5353"),
    ("dsr_origin_nat", [_with(HTTP, "ip_transparency"), DNS], "replies from tcp/80 (ip rule by source port)", "udp/5353"),
    ("dsr_router_nat", [HTTP, DNS], "every reply (default route)", "none"),
    ("dsr_router_nat", [_with(HTTP, "ip_transparency"), _with(DNS, "dsr_origin_nat")],
     "replies from tcp/80 (ip rule by source port)", "udp/5353"),
]


def _plan(tmp_path, playbook, services):
    inventory = _inventory(tmp_path)
    data = json.loads(open(inventory).read())
    data["all"]["children"]["lb"]["hosts"]["lb1"] = {"nginx_transparent_proxy_services": services}
    open(inventory, "w").write(json.dumps(data))
    proc = _ansible_playbook(tmp_path, inventory, playbook, *RENAMED + ["--limit", "web1"])
    found = re.findall(r'"msg": "(Route back via the proxy: .*?)"', proc.stdout)
    return proc, found


@pytest.mark.parametrize("playbook, services, route, rewrite", CASES,
                         ids=["%s-%s" % (c[0], "+".join(s["name"] + ":" + s.get("method", "-") for s in c[1])) for c in CASES])
def test_the_upstream_gets_what_the_methods_ask(tmp_path, playbook, services, route, rewrite):
    proc, found = _plan(tmp_path, playbook, services)
    print(proc.stdout[-4000:])
    assert found == ["Route back via the proxy: %s. Rewrite to the proxy's public address: %s." % (route, rewrite)]


def test_a_dsr_default_names_the_services_it_leaves_out(tmp_path):
    inventory = _inventory(tmp_path)
    data = json.loads(open(inventory).read())
    data["all"]["children"]["lb"]["hosts"]["lb1"] = {
        "nginx_transparent_proxy_services": [HTTP, DNS_TCP, _with(dict(HTTP, name="web2", port=8080), "ip_transparency"), DNS]}
    open(inventory, "w").write(json.dumps(data))
    proc = _ansible_playbook(tmp_path, inventory, "dsr_router_nat", *RENAMED + ["--limit", "lb1"])
    print(proc.stdout[-4000:])
    assert re.findall(r'"msg": "(Left out by .*?)"', proc.stdout) == [
        "Left out by the default method dsr_router_nat (DSR carries UDP only): http, dns_tcp. Give them `method: "
        "ip_transparency` to serve them from this proxy too (playbooks/site.yml)."]

    proc = _ansible_playbook(tmp_path, inventory, "site", *RENAMED + ["--limit", "lb1"])
    assert "Left out by" not in proc.stdout


def test_dsr_services_are_taken_as_given(tmp_path):
    """dsr_services name the DSR services explicitly: a TCP one among them is refused by the proxy's checks, naming
    it, not left out quietly."""
    inventory = _inventory(tmp_path)
    data = json.loads(open(inventory).read())
    data["all"]["children"]["lb"]["hosts"]["lb1"] = {"nginx_transparent_proxy_services": [DNS], "dsr_services": [HTTP]}
    open(inventory, "w").write(json.dumps(data))
    proc = _ansible_playbook(tmp_path, inventory, "dsr_router_nat", *RENAMED + ["--limit", "lb1"])
    print(proc.stdout[-4000:])
    assert proc.returncode != 0
    assert "Left out by" not in proc.stdout
    assert "Service http cannot use Direct Server Return (dsr_router_nat)" in " ".join(proc.stdout.split())


def test_an_unknown_service_key_is_refused_before_any_host_changes(tmp_path):
    """The roles check their argument specs when they run, after the upstreams' play: site.yml checks them in its
    first play, so a typo in a service stops the run before any host changes."""
    inventory = _inventory(tmp_path)
    data = json.loads(open(inventory).read())
    data["all"]["children"]["lb"]["hosts"]["lb1"] = {"nginx_transparent_proxy_services": [dict(DNS, methd="dsr_origin_nat")]}
    open(inventory, "w").write(json.dumps(data))
    proc = _ansible_playbook(tmp_path, inventory, "site", *RENAMED)
    failed, ran = _failures(proc.stdout)
    print(proc.stdout[-4000:])
    assert set(failed) == {"lb1"}, failed
    assert "methd" in failed["lb1"], failed["lb1"]
    assert ran.get("Check the proxy's variables against the role's argument spec") == {"lb1"}
    assert "Upstream servers route and rewrite their replies as each service's method asks" not in proc.stdout
