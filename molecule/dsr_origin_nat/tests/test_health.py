"""Issue 12 under dsr_origin_nat: a dead upstream must not swallow its share of the DNS traffic (client's load at 100
queries/s; see molecule/shared/faultload.py for the schedule and the figures), and graceful reloads lose nothing."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))

import faultload  # noqa: E402

METHOD = "dsr_origin_nat"


def test_dns_server_stopped_on_an_upstream_loses_nothing_after_5s():
    faultload.check_upstream_fault(METHOD, "dns_stopped")


def test_silent_upstream_host_loses_nothing_after_5s():
    faultload.check_upstream_fault(METHOD, "host_silent")


def test_twenty_graceful_reloads_under_load_lose_nothing():
    faultload.check_reloads_under_load(METHOD)
