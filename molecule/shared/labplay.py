"""Run the collection's playbooks against the lab from a scenario's checks, and read their recaps."""

import json
import os
import re
import subprocess
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PLAYBOOKS = {
    "ip_transparency": "playbooks/ip_transparency.yml",
    "dsr_router_nat": "playbooks/dsr_router_nat.yml",
    "dsr_origin_nat": "playbooks/dsr_origin_nat.yml",
    "site": "playbooks/site.yml",
    "teardown": "playbooks/teardown.yml",
    # molecule/mixed's converge: site.yml with the scenario's services (-e mixed_dns_method=... moves DNS over UDP)
    "mixed": "molecule/mixed/converge.yml",
}
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def play(name, *extra_vars, check=False, diff=False, limit=None, inventory="inventories/lab", env=None):
    """Run one of the collection's playbooks against the lab; returns (rc, output, {host: changed}).
    ``env`` adds environment variables (e.g. ANSIBLE_SSH_ARGS) to the run's clean environment."""
    cmd = [os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", inventory, PLAYBOOKS[name]]
    if limit:
        cmd += ["--limit", limit]
    for value in extra_vars:
        cmd += ["-e", value if isinstance(value, str) else json.dumps(value)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    run_env.update(
        ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    run_env.update(env or {})
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=900, check=False)
    out = proc.stdout + proc.stderr
    changed = {m.group(1): int(m.group(3)) for m in RECAP.finditer(proc.stdout)}
    took = time.monotonic() - started
    print("%s %s: rc=%d changed=%s (%.0f s)" % (name, " ".join(cmd[2:3] + cmd[4:]), proc.returncode, changed, took))
    return proc.returncode, out, changed
