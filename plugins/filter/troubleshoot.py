# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of the troubleshoot role: the diagnosis, the packet trace and the report.

The logic lives in plugins/plugin_utils/ (_nginx_conf, _checks, _trace, _report: pure functions,
unit tested); these filters only hand the role's data to it. Each filter is documented in its own
sidecar file, plugins/filter/<filter name>.yml (``ansible-doc -t filter netops.ip_transparency.<name>``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ValidationError
from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _checks as checks
from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _nginx_conf as nginx_conf
from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _report as report
from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _trace as trace


def troubleshoot_diagnose(config, hosts, pings=()):
    return checks.diagnose(config, hosts, pings)


def troubleshoot_ping_plan(config, hosts):
    return checks.ping_plan(config, hosts)


def troubleshoot_method(facts):
    return nginx_conf.detect_method(facts) or ""


def troubleshoot_service_methods(services, facts, forced="", default="", keep_all=False):
    try:
        return checks.service_methods(services, facts or {}, forced or "", default or "", bool(keep_all))
    except ValidationError as exc:
        raise AnsibleFilterError(str(exc))


def troubleshoot_probe_plan(config, name, base_port, count, count6=None, hosts=None):
    if hosts and not config.get("public_address6"):
        # the IPv6 VIP the diagnosis settles on: the public interface's global IPv6 address when none is configured
        config = dict(config, public_address6=checks.public_address6(config, hosts))
    return trace.probe_plan(config, name or "", base_port, count, count6)


def troubleshoot_trace(config, probes, captures):
    return trace.trace(config, probes, captures)


def troubleshoot_report(config, findings, traces=None):
    return report.report(config, findings, traces)


def troubleshoot_first_host(networks, version=4):
    return checks.first_host(networks, version)


def troubleshoot_upstream_address(facts, upstreams, version=4):
    return trace.upstream_address(facts, upstreams, version)


def troubleshoot_probes(lines, host, client_address, service, kind, vip=""):
    return trace.parse_probes(lines, host, client_address, service, kind, vip or "")


class FilterModule(object):
    def filters(self):
        return {
            "troubleshoot_diagnose": troubleshoot_diagnose,
            "troubleshoot_ping_plan": troubleshoot_ping_plan,
            "troubleshoot_method": troubleshoot_method,
            "troubleshoot_service_methods": troubleshoot_service_methods,
            "troubleshoot_trace": troubleshoot_trace,
            "troubleshoot_report": troubleshoot_report,
            "troubleshoot_first_host": troubleshoot_first_host,
            "troubleshoot_upstream_address": troubleshoot_upstream_address,
            "troubleshoot_probes": troubleshoot_probes,
            "troubleshoot_probe_plan": troubleshoot_probe_plan,
        }
