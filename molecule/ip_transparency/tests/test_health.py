"""Issue 12 under ip_transparency: a dead upstream must not swallow its share of the DNS traffic (client's load at 100
queries/s; see molecule/shared/faultload.py for the schedule and the figures), and graceful reloads lose nothing."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))

import faultload  # noqa: E402

METHOD = "ip_transparency"


def test_dns_server_stopped_on_an_upstream_loses_nothing_after_5s():
    faultload.check_upstream_fault(METHOD, "dns_stopped")


def test_silent_upstream_host_loses_nothing_after_5s():
    faultload.check_upstream_fault(METHOD, "host_silent")


def test_twenty_graceful_reloads_under_load_lose_at_most_the_datagram_in_flight():
    # Not "nothing": nginx 1.22 finalizes a UDP session whose reply reaches a worker that is shutting down
    # (ngx_stream_proxy_process: SOCK_DGRAM and ngx_exiting -> "disconnected on shutdown"), so a query in flight
    # at the instant of a reload (the upstream's ~0.3 ms round trip at 100 q/s) can be lost. Measured: 6 of 13
    # runs of 20 reloads lost exactly 1 query. DSR's replies bypass nginx: those scenarios require zero.
    faultload.check_reloads_under_load(METHOD, in_flight_allowance=1)
