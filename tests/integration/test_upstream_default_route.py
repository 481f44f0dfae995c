"""Real-kernel test of the upstream_default_route role's restore path: ansible-playbook runs the role on
localhost (connection local) inside a throwaway network namespace, present (twice) then absent, and the
main table must be what it was before, whatever default route the host had (issue 13, defect 3)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Each test runs the role (minutes of ansible-playbook in all); with Debian 12's pyroute2, only those marked compat.
pytestmark = pytest.mark.playbook

PLAYBOOK = """
- name: Upstream default route via the proxy, then back
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Route via the proxy
      ansible.builtin.include_role:
        name: netops.ip_transparency.upstream_default_route
      vars:
        upstream_default_route_state: present

    - name: Route via the proxy again (the saved record is kept)
      ansible.builtin.include_role:
        name: netops.ip_transparency.upstream_default_route
      vars:
        upstream_default_route_state: present

    - name: Read the default routes while the role's route is in place
      ansible.builtin.command: ip -j route show default table main
      register: during
      changed_when: false

    - name: Only the role's route is there
      ansible.builtin.assert:
        that:
          - during.stdout | from_json | length == 1
          - (during.stdout | from_json)[0]['gateway'] == '172.16.0.1'

    - name: Put the old default route(s) back
      ansible.builtin.include_role:
        name: netops.ip_transparency.upstream_default_route
      vars:
        upstream_default_route_state: absent
"""

PLAYBOOK_ABSENT = """
- name: Upstream default route back from the saved record
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Put the old default route(s) back
      ansible.builtin.include_role:
        name: netops.ip_transparency.upstream_default_route
      vars:
        upstream_default_route_state: absent
"""

# (a) a plain default route with proto static and onlink; (b) an ECMP default route with two weighted next
# hops (no top-level gateway or device); (c) both of them at other metrics, with a preferred source; (d) two
# default routes with the same key (table, dest, metric), the second added next to the first with `ip route append`
DEFAULTS = {
    "static_onlink": ["ip route add default via 10.0.2.2 dev d1 proto static onlink"],
    "ecmp": ["ip route add default proto static nexthop via 10.0.2.2 dev d1 weight 1 nexthop via 10.0.3.2 dev d2 weight 3"],
    "several": [
        "ip route add default via 192.0.2.1 dev d1 onlink metric 10 src 10.0.2.15",
        "ip route add default metric 20 nexthop via 10.0.2.2 dev d1 nexthop via 10.0.3.2 dev d2 onlink",
    ],
    "appended": ["ip route add default via 10.0.2.2 dev d1", "ip route append default via 10.0.3.2 dev d2"],
}


def _routes(sh, ns):
    return json.loads(sh(ns, "ip -j route show table main"))


@pytest.fixture
def upstream(netns, sh):
    """d0 on the proxy's network 172.16.0.0/24 (the proxy is .1), d1 and d2 on two uplinks."""
    name = netns()
    for index, net in enumerate(("172.16.0", "10.0.2", "10.0.3")):
        sh(name, "ip link add d{i} type veth peer name p{i} && ip link set d{i} addrgenmode none"
                 " && ip link set p{i} addrgenmode none && ip link set d{i} up && ip link set p{i} up"
                 " && ip addr add {net}.15/24 dev d{i}".format(i=index, net=net))
    return name


def _run_role(upstream, tmp_path, text=PLAYBOOK, role_vars=None, check=False):
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(text)
    extra = tmp_path / "vars.json"
    (tmp_path / "sysctl.d").mkdir(exist_ok=True)
    extra.write_text(json.dumps(dict({
        "ansible_python_interpreter": sys.executable,
        "upstream_default_route_gateway": "172.16.0.1",
        "upstream_default_route_persist": False,
        "upstream_default_route_controller_address": "172.16.0.5",
        # keep the record and the sysctl file out of the host's /etc
        "__upstream_default_route_fact_file": str(tmp_path / "facts.d" / "netops_upstream_default_route.fact"),
        "__upstream_default_route_sysctl_file": str(tmp_path / "sysctl.d" / "62-netops-upstream-default-route.conf"),
    }, **(role_vars or {}))))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(tmp_path / "local-tmp"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "remote-tmp"))
    cmd = ["ip", "netns", "exec", upstream, os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
           "-i", "localhost,", "-c", "local", "-e", "@%s" % extra, str(playbook)] + (["--check", "--diff"] if check else [])
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.compat) if c == "ecmp" else c for c in sorted(DEFAULTS)])
def test_absent_restores_the_default_routes_the_role_replaced(upstream, sh, tmp_path, case):
    for command in DEFAULTS[case]:
        sh(upstream, command)
    before = _routes(sh, upstream)
    proc = _run_role(upstream, tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert _routes(sh, upstream) == before
    assert not (tmp_path / "facts.d" / "netops_upstream_default_route.fact").exists()


def test_an_unreadable_record_stops_the_run_before_any_change(upstream, sh, tmp_path):
    """Errors are facts: a saved record that cannot be read is not "nothing saved" (which would lose what to
    restore); the run fails at the read, naming it, and the host's routes are untouched."""
    sh(upstream, DEFAULTS["static_onlink"][0])
    before = _routes(sh, upstream)
    (tmp_path / "facts.d" / "netops_upstream_default_route.fact").mkdir(parents=True)  # there, but not a file
    proc = _run_role(upstream, tmp_path)
    assert proc.returncode != 0, proc.stdout[-3000:]
    failed_at = proc.stdout[:proc.stdout.index("fatal:")]
    assert "Read the record of an earlier run" in failed_at[failed_at.rindex("TASK ["):], proc.stdout[-3000:]
    assert _routes(sh, upstream) == before


def test_a_record_of_the_previous_version_is_refused_before_any_change(upstream, sh, tmp_path):
    """The role's previous version saved raw `ip -j route` objects (dst, dev, gateway; no dest): absent names the
    file and what to do instead of failing on a missing key, and changes nothing."""
    sh(upstream, "ip route add default via 172.16.0.1 dev d0")  # the route that version left in place
    before = _routes(sh, upstream)
    record = tmp_path / "facts.d" / "netops_upstream_default_route.fact"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"replaced": [{"dst": "default", "gateway": "10.0.2.2", "dev": "d1", "flags": []}],
                                  "family": "ipv4", "table": "main", "gateway": "172.16.0.1", "device": "d0", "metric": 0}))
    proc = _run_role(upstream, tmp_path, PLAYBOOK_ABSENT)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "written by an earlier version of this role" in proc.stdout and str(record) in proc.stdout, proc.stdout[-3000:]
    assert "remove the file" in proc.stdout, proc.stdout[-3000:]
    assert _routes(sh, upstream) == before
    assert record.exists()


# --- selected traffic (issue 14): the replies of some local services via the proxy, by source port ----------------

PLAYBOOK_ONE = """
- name: Upstream default route, one run
  hosts: localhost
  gather_facts: false
  roles:
    - role: netops.ip_transparency.upstream_default_route
"""

ROUTER = "ip route add default via 10.0.2.2 dev d1"


def _state(sh, ns):
    """The rules and every table's routes (the kernel's own local table left out)."""
    rules = sh(ns, "ip rule show")
    routes = sh(ns, "ip route show table all | grep -v '^local \\|^broadcast \\|table local'")
    return rules + "---\n" + routes


def _step(upstream, tmp_path, role_vars, check=False):
    proc = _run_role(upstream, tmp_path, PLAYBOOK_ONE, role_vars, check=check)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc


def _changed(proc):
    recap = proc.stdout[proc.stdout.rindex("PLAY RECAP"):]
    return int(recap.split("changed=")[1].split()[0])


def _changed_tasks(proc):
    """The names of the tasks that changed, in the order they ran."""
    names, current = [], None
    for line in proc.stdout.splitlines():
        if line.startswith("TASK ["):
            current = line[6:line.index("]")].split(" : ", 1)[-1]
        elif line.startswith("changed:") and current and (not names or names[-1] != current):
            names.append(current)
    return names


SEL_TCP80 = {"upstream_default_route_selectors": [{"protocol": "tcp", "port": 80}], "upstream_default_route_table": 101}
SEL_BOTH = {"upstream_default_route_selectors": [{"protocol": "tcp", "port": 80}, {"protocol": "udp", "port": 53}],
            "upstream_default_route_table": 101}
SEL_UDP53 = {"upstream_default_route_selectors": [{"protocol": "udp", "port": 53}], "upstream_default_route_table": 101}


def test_selected_traffic_transitions_main_selectors_absent(upstream, sh, tmp_path):
    sh(upstream, ROUTER)
    baseline = _state(sh, upstream)
    get80 = "ip route get 198.51.100.7 ipproto tcp sport 80"
    get81 = "ip route get 198.51.100.7 ipproto tcp sport 81"

    # main mode: every reply via the proxy
    _step(upstream, tmp_path, {})
    assert "default via 172.16.0.1 dev d0" in sh(upstream, "ip route show table main")
    assert "via 172.16.0.1" in sh(upstream, get81)

    # check mode of main -> selectors changes nothing
    preview = _step(upstream, tmp_path, SEL_TCP80, check=True)
    assert _changed(preview) > 0
    main_state = _state(sh, upstream)

    # main -> selectors: make before break (rule and table route first, then the router's route back)
    proc = _step(upstream, tmp_path, SEL_TCP80)
    order = _changed_tasks(proc)
    assert order.index("Send the selected traffic to that table") < order.index("Restore the saved default routes"), order
    assert main_state != _state(sh, upstream)
    assert "1000:\tfrom all ipproto tcp sport 80 lookup 101" in sh(upstream, "ip rule show")
    assert sh(upstream, "ip route show table 101").strip() == "default via 172.16.0.1 dev d0"
    assert sh(upstream, "ip route show default table main").strip() == "default via 10.0.2.2 dev d1"
    assert "via 172.16.0.1" in sh(upstream, get80) and "via 10.0.2.2" in sh(upstream, get81)
    selector_state = _state(sh, upstream)
    assert _changed(_step(upstream, tmp_path, SEL_TCP80)) == 0  # idempotent
    assert _changed(_step(upstream, tmp_path, SEL_TCP80, check=True)) == 0
    assert _state(sh, upstream) == selector_state

    # the selector list changes: rules added, the one no longer wanted removed (only the role's own)
    sh(upstream, "ip rule add priority 1000 ipproto tcp sport 443 lookup 101")  # not the role's: stays
    _step(upstream, tmp_path, SEL_BOTH)
    rules = sh(upstream, "ip rule show")
    assert "ipproto tcp sport 80 lookup 101" in rules and "ipproto udp sport 53 lookup 101" in rules
    _step(upstream, tmp_path, SEL_UDP53)
    rules = sh(upstream, "ip rule show")
    assert "sport 80 " not in rules and "ipproto udp sport 53 lookup 101" in rules and "sport 443" in rules
    sh(upstream, "ip rule del priority 1000 ipproto tcp sport 443 lookup 101")

    # selectors -> main: the main route via the proxy first, then the rules and the table route go
    proc = _step(upstream, tmp_path, {})
    order = _changed_tasks(proc)
    assert order.index("Route the default traffic via the proxy (replacing every other default route of the table)") < \
        order.index("Remove the selected traffic's rules (the main table's default route now goes via the proxy)"), order
    assert "sport" not in sh(upstream, "ip rule show")
    assert sh(upstream, "ip route show table 101").strip() == ""
    assert sh(upstream, "ip route show default table main").strip() == "default via 172.16.0.1 dev d0"
    assert _changed(_step(upstream, tmp_path, {})) == 0

    # back to selectors, and absent from there: the baseline
    _step(upstream, tmp_path, SEL_TCP80)
    assert sh(upstream, "ip route show default table main").strip() == "default via 10.0.2.2 dev d1"
    _step(upstream, tmp_path, dict(SEL_TCP80, upstream_default_route_state="absent"))
    assert _state(sh, upstream) == baseline
    assert not (tmp_path / "facts.d" / "netops_upstream_default_route.fact").exists()


def test_selected_traffic_from_scratch_and_absent_without_the_selector_variables(upstream, sh, tmp_path):
    sh(upstream, ROUTER)
    baseline = _state(sh, upstream)
    _step(upstream, tmp_path, dict(SEL_BOTH, upstream_default_route_table="main", upstream_default_route_rule_priority=900))
    assert "900:\tfrom all ipproto udp sport 53 lookup 101" in sh(upstream, "ip rule show")  # main means table 101
    assert sh(upstream, "ip route show default table main").strip() == "default via 10.0.2.2 dev d1"
    _step(upstream, tmp_path, {"upstream_default_route_state": "absent"})  # the record says what to remove
    assert _state(sh, upstream) == baseline


@pytest.mark.parametrize("role_vars, message", [
    ({"upstream_default_route_selectors": [{"protocol": "icmp", "port": 80}]}, "value of protocol must be one of: tcp, udp, got: icmp"),
    ({"upstream_default_route_selectors": [{"protocol": "tcp", "port": 65535}]}, "port 65535"),
    ({"upstream_default_route_selectors": [{"protocol": "tcp", "port": 80}, {"protocol": "tcp", "port": 80}]},
     "more than once: tcp port 80"),
    (dict(SEL_TCP80, upstream_default_route_table="local"), "must be a table number other than"),
    (dict(SEL_TCP80, upstream_default_route_table=254), "must be a table number other than"),
    (dict(SEL_TCP80, upstream_default_route_rule_priority=32766), "upstream_default_route_rule_priority must be 1-32765"),
])
def test_selected_traffic_refusals_change_nothing(upstream, sh, tmp_path, role_vars, message):
    sh(upstream, ROUTER)
    baseline = _state(sh, upstream)
    proc = _run_role(upstream, tmp_path, PLAYBOOK_ONE, role_vars)
    assert proc.returncode != 0 and message in proc.stdout, proc.stdout[-3000:]
    assert _state(sh, upstream) == baseline


PLAYBOOK_UNIT = """
- name: Render the boot unit as the role would
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Preflight (works out the table, the rules and the device)
      ansible.builtin.include_role:
        name: netops.ip_transparency.upstream_default_route
        tasks_from: preflight.yml
        public: true

    - name: Render the unit
      ansible.builtin.template:
        src: "{{ role_dir }}/templates/netops-upstream-default-route.service.j2"
        dest: "{{ unit_dest }}"
        mode: "0644"
"""


def test_the_boot_unit_sets_the_same_rules_and_route_again(upstream, sh, tmp_path):
    """A reboot comes back in the same state: the unit's ExecStart lines, run on a fresh host, give the table route
    and the rules the role set; run twice (a restart), they do not duplicate a rule."""
    sh(upstream, ROUTER)
    role_vars = dict(SEL_BOTH, upstream_default_route_rule_priority=900)
    _step(upstream, tmp_path, role_vars)
    wanted = _state(sh, upstream)
    unit = tmp_path / "unit.service"
    proc = _run_role(upstream, tmp_path, PLAYBOOK_UNIT, dict(role_vars, unit_dest=str(unit),
                     role_dir=os.path.join(ROOT, "roles", "upstream_default_route")))
    assert proc.returncode == 0, proc.stdout[-6000:]
    lines = [line.split("=", 1)[1] for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    assert any("ipproto udp sport 53 lookup 101" in line for line in lines), lines

    # a rebooted host: the same links and addresses and the router's route, nothing of the role's
    _run_role(upstream, tmp_path, PLAYBOOK_ONE, dict(role_vars, upstream_default_route_state="absent"))
    for _round in (1, 2):
        for line in lines:
            sh(upstream, line.lstrip("-"), check=not line.startswith("-"))
        assert _state(sh, upstream) == wanted


# --- IPv6 (issue 16): both families in one run ---------------------------------------------------------------------

ROUTER6 = "ip -6 route add default via fd00:2::2 dev d1 metric 100"
# a default route learned from router advertisements (as the kernel marks it): not recorded, the advertisements
# bring it back once accept_ra_defrtr is put back
RA6 = "ip -6 route add default via fe80::1 dev d0 proto ra"
DUAL = {"upstream_default_route_gateway6": "fd00:16::1"}
DUAL_SEL = dict(SEL_TCP80, **DUAL)


@pytest.fixture
def upstream6(upstream, sh):
    """The upstream dual-stack: d0 also fd00:16::11/64 (the proxy is fd00:16::1), d1 fd00:2::15/64 (the router is
    fd00:2::2); every interface accepts router advertisements, with accept_ra_defrtr 1 (a new namespace's defaults)."""
    sh(upstream, "sysctl -qw net.ipv6.conf.lo.disable_ipv6=0 net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0"
                 " && for d in d0 d1 d2; do sysctl -qw net.ipv6.conf.$d.disable_ipv6=0 net.ipv6.conf.$d.accept_ra=1"
                 " net.ipv6.conf.$d.accept_ra_defrtr=1; done"
                 " && ip addr add fd00:16::11/64 dev d0 nodad && ip addr add fd00:2::15/64 dev d1 nodad")
    return upstream


def _state6(sh, ns):
    """Both families' rules and routes (the local tables left out), and d0's accept_ra_defrtr."""
    rules = sh(ns, "ip -6 rule show")
    routes = sh(ns, "ip -6 route show table all | grep -v '^local \\|^multicast \\|^anycast \\|table local\\|^fe80::/64'")
    return _state(sh, ns) + "---\n" + rules + "---\n" + routes + "---\n" + _defrtr(sh, ns)


def _defrtr(sh, ns):
    return sh(ns, "cat /proc/sys/net/ipv6/conf/d0/accept_ra_defrtr").strip()


def _defaults6(sh, ns, table="main"):
    return sh(ns, "ip -6 route show default table %s" % table).strip()


def _record(tmp_path):
    return json.loads((tmp_path / "facts.d" / "netops_upstream_default_route.fact").read_text())


def _sysctl_file(tmp_path):
    return tmp_path / "sysctl.d" / "62-netops-upstream-default-route.conf"


@pytest.mark.compat
def test_both_families_present_rerun_absent(upstream6, sh, tmp_path):
    """One run routes both families via the proxy, with accept_ra_defrtr off on the IPv6 gateway's interface; a
    re-run (and its check mode) changes nothing; absent puts both families back, except the route learned from
    router advertisements, which they bring back."""
    for command in (ROUTER, ROUTER6, RA6):
        sh(upstream6, command)
    baseline = _state6(sh, upstream6)
    assert _defrtr(sh, upstream6) == "1"

    preview = _step(upstream6, tmp_path, DUAL, check=True)
    assert _changed(preview) > 0
    assert _state6(sh, upstream6) == baseline
    assert not (tmp_path / "facts.d" / "netops_upstream_default_route.fact").exists()

    proc = _step(upstream6, tmp_path, DUAL)
    order = _changed_tasks(proc)
    assert order.index("Turn accept_ra_defrtr off now") < \
        order.index("Route the default traffic via the proxy (replacing every other default route of the table)"), order
    assert sh(upstream6, "ip route show default table main").strip() == "default via 172.16.0.1 dev d0"
    assert _defaults6(sh, upstream6) == "default via fd00:16::1 dev d0 metric 1024 pref medium"
    assert _defrtr(sh, upstream6) == "0"
    assert "net/ipv6/conf/d0/accept_ra_defrtr = 0" in _sysctl_file(tmp_path).read_text()
    record = _record(tmp_path)
    # the IPv4 keys as before IPv6, the IPv6 family under `ipv6`; the advertised route is not saved
    assert record["gateway"] == "172.16.0.1" and record["family"] == "ipv4"
    assert [r["gateway"] for r in record["replaced"]] == ["10.0.2.2"]
    assert record["ipv6"]["gateway"] == "fd00:16::1" and record["ipv6"]["family"] == "ipv6"
    assert [(r["gateway"], r["metric"]) for r in record["ipv6"]["replaced"]] == [("fd00:2::2", 100)]
    assert record["ipv6"]["accept_ra_defrtr"] == {"d0": "1"}
    during = _state6(sh, upstream6)

    assert _changed(_step(upstream6, tmp_path, DUAL)) == 0
    assert _changed(_step(upstream6, tmp_path, DUAL, check=True)) == 0
    assert _state6(sh, upstream6) == during

    _step(upstream6, tmp_path, dict(DUAL, upstream_default_route_state="absent"))
    sh(upstream6, RA6)  # the next advertisement
    assert _state6(sh, upstream6) == baseline
    assert not _sysctl_file(tmp_path).exists()
    assert not (tmp_path / "facts.d" / "netops_upstream_default_route.fact").exists()


def test_absent_on_a_host_the_role_never_changed_changes_nothing(upstream6, sh, tmp_path):
    """absent with both gateways given and no record (Method 2b's upstreams on a fresh host, a record removed): the
    families the variables describe replaced nothing; the run passes and leaves both families as they are (it
    failed with "dict object has no attribute 'replaced'" before restore_main gave them an empty list)."""
    for command in (ROUTER, ROUTER6):
        sh(upstream6, command)
    baseline = _state6(sh, upstream6)
    proc = _step(upstream6, tmp_path, dict(DUAL, upstream_default_route_state="absent"))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert _state6(sh, upstream6) == baseline
    assert not (tmp_path / "facts.d" / "netops_upstream_default_route.fact").exists()


# the record of the role's version before dual stack, which took an IPv6 gateway in upstream_default_route_gateway:
# that family at the record's top level, the routes it replaced as policy_route's options
OLD_IPV6_RECORD = {
    "replaced": [{"family": "ipv6", "table": 254, "dest": "::/0", "type": "unicast", "gateway": "fd00:2::2", "device": "d1",
                  "source": None, "metric": 100, "proto": "boot", "onlink": False, "nexthops": []}],
    "family": "ipv6", "table": "main", "gateway": "fd00:16::1", "device": "d0", "metric": 0,
}


@pytest.mark.parametrize("role_vars", [
    pytest.param({"upstream_default_route_gateway": "", "upstream_default_route_gateway6": "fd00:16::1"}, id="gateway6"),
    pytest.param(DUAL, id="both"),
    # IPv6 left out: the old entry is a family no longer given, its route goes back at once
    pytest.param({}, id="ipv4-only"),
])
def test_an_ipv6_record_of_the_previous_version_keeps_its_routes(upstream6, sh, tmp_path, role_vars):
    """A host the previous version routed via an IPv6 gateway given in upstream_default_route_gateway (now refused:
    it moves to gateway6): its record's top-level entry is the IPv6 family's, so the router's IPv6 default route it
    saved is the one absent puts back (not the proxy's route found in its place), and it is never taken for IPv4's."""
    sh(upstream6, ROUTER)
    sh(upstream6, ROUTER6)
    baseline = _state6(sh, upstream6)
    # what that version left: its route via the proxy in place of the router's, and its record
    sh(upstream6, "ip -6 route del default via fd00:2::2 dev d1 metric 100 && ip -6 route add default via fd00:16::1 dev d0")
    record = tmp_path / "facts.d" / "netops_upstream_default_route.fact"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps(OLD_IPV6_RECORD))

    _step(upstream6, tmp_path, role_vars)
    saved = _record(tmp_path)
    assert saved.get("family", "ipv4") == "ipv4", saved
    ipv4 = [r["gateway"] for r in saved.get("replaced", [])]
    assert ipv4 == (["10.0.2.2"] if role_vars.get("upstream_default_route_gateway", "x") else []), saved
    if role_vars.get("upstream_default_route_gateway6"):
        assert [(r["gateway"], r["metric"]) for r in saved["ipv6"]["replaced"]] == [("fd00:2::2", 100)], saved
        assert _defaults6(sh, upstream6) == "default via fd00:16::1 dev d0 metric 1024 pref medium"
    else:
        assert "ipv6" not in saved, saved
        assert _defaults6(sh, upstream6) == "default via fd00:2::2 dev d1 metric 100 pref medium"

    _step(upstream6, tmp_path, {"upstream_default_route_state": "absent"})
    assert _state6(sh, upstream6) == baseline
    assert not record.exists()


def test_accept_ra_defrtr_goes_back_before_the_role_route(upstream6, sh, tmp_path):
    """A host whose only IPv6 default route came from router advertisements (never recorded): accept_ra_defrtr is put
    back before the role's route goes, on absent and when gateway6 is emptied, so that an advertisement arriving
    meanwhile adds its route next to the role's rather than being ignored."""
    sh(upstream6, ROUTER)
    sh(upstream6, RA6)
    baseline = _state6(sh, upstream6)
    for leave in ({"upstream_default_route_state": "absent"}, {"upstream_default_route_gateway6": ""}):
        _step(upstream6, tmp_path, DUAL)
        assert _defrtr(sh, upstream6) == "0" and _record(tmp_path)["ipv6"]["replaced"] == []
        assert _defaults6(sh, upstream6) == "default via fd00:16::1 dev d0 metric 1024 pref medium"
        order = _changed_tasks(_step(upstream6, tmp_path, dict(DUAL, **leave)))
        assert order.index("Put back the accept_ra_defrtr values the role changed") < \
            order.index("Remove the role's default route (nothing was replaced)"), order
        assert _defrtr(sh, upstream6) == "1" and _defaults6(sh, upstream6) == ""
        sh(upstream6, RA6)  # the next advertisement
        if leave.get("upstream_default_route_state") == "absent":
            assert _state6(sh, upstream6) == baseline
        else:
            assert _defaults6(sh, upstream6).startswith("default via fe80::1 dev d0 proto ra")
    _step(upstream6, tmp_path, {"upstream_default_route_state": "absent"})
    assert _state6(sh, upstream6) == baseline


def test_accept_ra_defrtr_is_left_alone_when_asked_or_without_advertisements(upstream6, sh, tmp_path):
    sh(upstream6, ROUTER6)
    _step(upstream6, tmp_path, dict(DUAL, upstream_default_route_accept_ra_defrtr=True))
    assert _defrtr(sh, upstream6) == "1" and not _sysctl_file(tmp_path).exists()
    assert "accept_ra_defrtr" not in _record(tmp_path)["ipv6"]
    _step(upstream6, tmp_path, {"upstream_default_route_state": "absent"})
    sh(upstream6, "sysctl -qw net.ipv6.conf.d0.accept_ra=0")
    _step(upstream6, tmp_path, DUAL)
    assert _defrtr(sh, upstream6) == "1" and not _sysctl_file(tmp_path).exists()
    assert _defaults6(sh, upstream6) == "default via fd00:16::1 dev d0 metric 1024 pref medium"


def test_both_families_selectors_and_a_family_left_out(upstream6, sh, tmp_path):
    for command in (ROUTER, ROUTER6):
        sh(upstream6, command)
    baseline = _state6(sh, upstream6)
    router6 = _defaults6(sh, upstream6)

    # main (both) -> selectors (both): ip -6 rule too; the main table's IPv6 default route and accept_ra_defrtr back
    _step(upstream6, tmp_path, DUAL)
    assert _defrtr(sh, upstream6) == "0"
    _step(upstream6, tmp_path, DUAL_SEL)
    assert "1000:\tfrom all ipproto tcp sport 80 lookup 101" in sh(upstream6, "ip -6 rule show")
    assert "1000:\tfrom all ipproto tcp sport 80 lookup 101" in sh(upstream6, "ip rule show")
    assert _defaults6(sh, upstream6, 101) == "default via fd00:16::1 dev d0 metric 1024 pref medium"
    assert _defaults6(sh, upstream6) == router6
    assert _defrtr(sh, upstream6) == "1" and not _sysctl_file(tmp_path).exists()
    assert "via fd00:16::1" in sh(upstream6, "ip -6 route get 2001:db8:99::7 ipproto tcp sport 80")
    assert "via fd00:2::2" in sh(upstream6, "ip -6 route get 2001:db8:99::7 ipproto tcp sport 81")
    assert _changed(_step(upstream6, tmp_path, DUAL_SEL)) == 0

    # selectors (both) -> main, IPv4 only: the IPv6 rules and table route go, IPv6's main table is untouched
    _step(upstream6, tmp_path, {})
    assert "sport" not in sh(upstream6, "ip -6 rule show") and _defaults6(sh, upstream6, 101) == ""
    assert _defaults6(sh, upstream6) == router6
    assert sh(upstream6, "ip route show default table main").strip() == "default via 172.16.0.1 dev d0"

    # IPv6 added, then left out again: its default route and accept_ra_defrtr go back, IPv4 stays via the proxy
    _step(upstream6, tmp_path, DUAL)
    assert _defaults6(sh, upstream6) == "default via fd00:16::1 dev d0 metric 1024 pref medium"
    _step(upstream6, tmp_path, {"upstream_default_route_gateway6": ""})
    assert _defaults6(sh, upstream6) == router6 and _defrtr(sh, upstream6) == "1"
    assert "ipv6" not in _record(tmp_path) and not _sysctl_file(tmp_path).exists()
    assert sh(upstream6, "ip route show default table main").strip() == "default via 172.16.0.1 dev d0"
    assert _changed(_step(upstream6, tmp_path, {})) == 0

    # IPv6 only (IPv4 left out: its route goes back), then absent from the record alone
    _step(upstream6, tmp_path, {"upstream_default_route_gateway": "", "upstream_default_route_gateway6": "fd00:16::1"})
    assert sh(upstream6, "ip route show default table main").strip() == "default via 10.0.2.2 dev d1"
    assert _defaults6(sh, upstream6) == "default via fd00:16::1 dev d0 metric 1024 pref medium"
    assert set(_record(tmp_path)) == {"ipv6"}
    _step(upstream6, tmp_path, {"upstream_default_route_state": "absent"})
    assert _state6(sh, upstream6) == baseline


def test_the_boot_unit_sets_both_families_again(upstream6, sh, tmp_path):
    sh(upstream6, ROUTER)
    sh(upstream6, ROUTER6)
    unit = tmp_path / "unit.service"
    unit_vars = dict(unit_dest=str(unit), role_dir=os.path.join(ROOT, "roles", "upstream_default_route"))
    proc = _run_role(upstream6, tmp_path, PLAYBOOK_UNIT, dict(DUAL, **unit_vars))
    assert proc.returncode == 0, proc.stdout[-6000:]
    lines = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    assert lines == ["ExecStart=ip -4 route replace default via 172.16.0.1 dev d0 metric 0 table main",
                     "ExecStart=ip -6 route replace default via fd00:16::1 dev d0 metric 0 table main"], lines

    role_vars = dict(DUAL_SEL, upstream_default_route_selectors=[{"protocol": "tcp", "port": 80}, {"protocol": "udp", "port": 53}])
    _step(upstream6, tmp_path, role_vars)
    wanted = _state6(sh, upstream6)
    proc = _run_role(upstream6, tmp_path, PLAYBOOK_UNIT, dict(role_vars, **unit_vars))
    assert proc.returncode == 0, proc.stdout[-6000:]
    lines = [line.split("=", 1)[1] for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    assert "ip -6 rule add priority 1000 ipproto udp sport 53 lookup 101" in lines, lines
    _run_role(upstream6, tmp_path, PLAYBOOK_ONE, dict(role_vars, upstream_default_route_state="absent"))
    for _round in (1, 2):
        for line in lines:
            sh(upstream6, line.lstrip("-"), check=not line.startswith("-"))
        assert _state6(sh, upstream6) == wanted


@pytest.mark.parametrize("controller, parts", [
    ("2001:db8:77::5", ["Ansible reaches this host from 2001:db8:77::5", "ip -6 route add 2001:db8:77::5/128"]),
    # an IPv4 session as a dual-stack sshd shows it: the IPv4 route is the one checked
    ("::ffff:10.99.0.5", ["Ansible reaches this host from 10.99.0.5", "ip route add 10.99.0.5/32"]),
])
def test_no_lockout_is_checked_in_the_controllers_family(upstream6, sh, tmp_path, controller, parts):
    sh(upstream6, ROUTER)
    sh(upstream6, ROUTER6)
    baseline = _state6(sh, upstream6)
    proc = _run_role(upstream6, tmp_path, PLAYBOOK_ONE, dict(DUAL, upstream_default_route_controller_address=controller))
    assert proc.returncode != 0, proc.stdout[-3000:]
    message = " ".join(proc.stdout.split())
    for part in parts + ["only the default route matches that address"]:
        assert part in message, proc.stdout[-3000:]
    assert _state6(sh, upstream6) == baseline
    # reachable over a specific route: no refusal
    sh(upstream6, "ip -6 route add 2001:db8:77::/64 via fd00:2::2 && ip route add 10.99.0.0/24 via 10.0.2.2")
    _step(upstream6, tmp_path, dict(DUAL, upstream_default_route_controller_address=controller))
