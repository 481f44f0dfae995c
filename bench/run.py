"""`make bench`: the phases, each writing its JSON into the run's directory, then the report.

    python bench/run.py host   DIR    control plane + per-packet cost (network namespaces) + the VM comparison
    python bench/run.py lab    DIR    data plane in the container lab (the caller holds the lab lock, ran `make lab`)
    python bench/run.py report DIR    results.json (every target: value, bound, status), report.md, bench.png

Environment knobs (with the defaults the whole bench takes about 25 minutes on a 2-core machine):
    BENCH_DNS_LOADS="2000 4000 6000 8000 10000 12000"   offered queries per second, each method
    BENCH_DNS_SECONDS=5  BENCH_HTTP_SECONDS=5       per dnsperf / wrk run
    BENCH_PP_ROUNDS=7                               per-packet rounds (1 s per chain each)
    BENCH_CP_REPEAT=3                               control-plane repeats
    BENCH_VM_N=256                                  upstreams in the VM comparison (0: skip it)
    BENCH_VM_DNS_LOADS="250 500 750 1000 1250"      offered q/s in the VM peer comparison (IPVS-DR; empty: skip it)
    BENCH_VM_DNS_SECONDS=5                          per dnsperf run in the VM
"""

import datetime
import os
import platform
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import loadavg, read_json, sh, write_json  # noqa: E402


def log(message):
    print(message, flush=True)


def env_list(name, default):
    return [int(x) for x in os.environ.get(name, default).split()]


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        mem_kb = int(handle.readline().split()[1])
    osname = "unknown"
    if os.path.exists("/etc/os-release"):
        with open("/etc/os-release") as handle:
            for line in handle:
                if line.startswith("PRETTY_NAME="):
                    osname = line.split("=", 1)[1].strip().strip('"')
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "hostname": socket.gethostname(),
        "os": osname,
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kb / 1048576.0, 1),
        "loadavg_at_start": loadavg(),
        "top_cpu_at_start": sh("ps -eo pcpu,comm --sort=-pcpu | sed -n 2,6p", check=False).stdout.split("\n")[:5],
    }


def phase_host(out):
    import controlplane
    import perpacket
    import vmcompare
    write_json(os.path.join(out, "machine.json"), machine())
    t = time.time()
    log("control plane (tc_nat_filter apply times, network namespace)")
    write_json(os.path.join(out, "controlplane.json"),
               controlplane.run(repeat=int(os.environ.get("BENCH_CP_REPEAT", "3")), log=log))
    log("per-packet cost (forwarding throughput, network namespaces)")
    write_json(os.path.join(out, "perpacket.json"),
               perpacket.run(rounds=int(os.environ.get("BENCH_PP_ROUNDS", "7")), log=log))
    n = int(os.environ.get("BENCH_VM_N", "256"))
    if n > 0:
        log("the article's tc way for real, in the qemu VM (%d upstreams)" % n)
        vm = vmcompare.outer(n)
        log("  VM: %s" % (vm.get("detail") or vm.get("reason")))
    else:
        vm = {"speedup": None, "reason": "skipped (BENCH_VM_N=0)"}
    write_json(os.path.join(out, "vm.json"), vm)
    loads = env_list("BENCH_VM_DNS_LOADS", "250 500 750 1000 1250")
    if loads:
        import vmpeers
        log("IPVS-DR beside the nginx methods, in the qemu VM (DNS, %s q/s offered)" % " ".join(map(str, loads)))
        peers = vmpeers.outer(loads, int(os.environ.get("BENCH_VM_DNS_SECONDS", "5")))
        if peers.get("reason"):
            log("  VM peers: %s" % peers["reason"])
    else:
        peers = {"reason": "skipped (BENCH_VM_DNS_LOADS empty)"}
    write_json(os.path.join(out, "vmpeers.json"), peers)
    log("host phases: %.0f s" % (time.time() - t))


def phase_lab(out):
    import dataplane
    t = time.time()
    log("data plane in the lab (dnsperf, wrk)")
    result = dataplane.run(env_list("BENCH_DNS_LOADS", "2000 4000 6000 8000 10000 12000"),
                           seconds=int(os.environ.get("BENCH_DNS_SECONDS", "5")),
                           http_seconds=int(os.environ.get("BENCH_HTTP_SECONDS", "5")), log=log)
    write_json(os.path.join(out, "dataplane.json"), result)
    log("lab phase: %.0f s" % (time.time() - t))


def phase_report(out):
    import report
    import targets

    # rendered again (e.g. the committed example, which keeps only results.json): the run's own parts and timing
    previous = os.path.join(out, "results.json")
    earlier = read_json(previous) if os.path.exists(previous) else {}

    def part(name):
        path = os.path.join(out, name + ".json")
        return read_json(path) if os.path.exists(path) else earlier.get(name)
    data = {name: part(name) for name in ("machine", "controlplane", "perpacket", "vm", "vmpeers", "dataplane")}
    started = os.path.join(out, "started")
    if earlier.get("timing"):
        data["timing"] = earlier["timing"]
    elif os.path.exists(started):
        with open(started) as handle:
            t0 = int(handle.read().strip())
        data["timing"] = {"total_s": round(time.time() - t0)}
        host_json, dp_json = os.path.join(out, "vmpeers.json"), os.path.join(out, "dataplane.json")
        if os.path.exists(host_json):  # the host phase writes vmpeers.json last
            data["timing"]["host_phases_s"] = round(os.path.getmtime(host_json) - t0)
            if data["dataplane"]:
                lab_start = os.path.getmtime(dp_json) - data["dataplane"]["elapsed_s"]
                data["timing"]["lock_wait_and_make_lab_s"] = round(lab_start - os.path.getmtime(host_json))
                data["timing"]["lab_phase_s"] = round(data["dataplane"]["elapsed_s"])
    data["targets"] = targets.evaluate(data["dataplane"], data["controlplane"], data["perpacket"], data["vm"])
    data["peers"] = targets.peers(data["dataplane"], data["vmpeers"])
    write_json(os.path.join(out, "results.json"), data)
    report.write(out, data)
    for t in data["targets"]:
        log("  %-32s %-12s %s %s (bound %s)" % (t["name"], t["status"], t["value"], t["unit"], t["bound"]))
    for p in data["peers"]:
        log("  %-32s %s" % (p["name"], p["summary"]))
    log("report: %s" % os.path.join(out, "report.md"))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("host", "lab", "report"):
        raise SystemExit(__doc__)
    os.makedirs(sys.argv[2], exist_ok=True)
    {"host": phase_host, "lab": phase_lab, "report": phase_report}[sys.argv[1]](sys.argv[2])
