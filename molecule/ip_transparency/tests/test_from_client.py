"""Method 1 verified from the client: the article's expected results."""

import sys
import os

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))

import labcheck  # noqa: E402

testinfra_hosts = ["client"]


def test_http_answers_come_from_every_upstream_and_see_the_client(host):
    replies = [labcheck.parse_hello(host.check_output("curl -sS --max-time 5 http://%s/" % labcheck.VIP)) for attempt in range(8)]
    for reply in replies:
        print("Hello from {name}. You connected from {src}:{sport} to {dst}:{dport}".format(**reply))
    assert {r["name"] for r in replies} == set(labcheck.UPSTREAMS), "not balanced across all four upstreams"
    for reply in replies:
        assert reply["src"] == labcheck.CLIENT, "upstream saw %s, not the client" % reply["src"]
        assert reply["dst"] == labcheck.UPSTREAMS[reply["name"]]
        assert reply["dport"] == "80"


def test_udp_service_is_answered_and_upstreams_see_the_client(host):
    answers = set()
    for attempt in range(8):  # noqa: B007 pylint: disable=unused-variable
        out = host.check_output("dig +short +time=2 +tries=1 @%s www.example.com" % labcheck.VIP)
        assert out.strip() in labcheck.UPSTREAMS.values(), "no answer through the proxy: %r" % out
        answers.add(out.strip())
    assert answers == set(labcheck.UPSTREAMS.values()), "DNS not balanced across all four upstreams"

    labcheck.assert_probe_seen_from_client(host)


def test_proxy_workers_are_not_root_and_hold_only_cap_net_raw():
    labcheck.assert_workers_least_privilege()
