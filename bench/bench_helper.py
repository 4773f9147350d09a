#!/usr/bin/env python3
"""Helper for bench/probe_bench.sh (python3 standard library only).

Subcommands:
  wait-probe URL OUT [--timeout S]   poll URL until it answers; save the body to OUT; exit 0 when
                                     the body has "probe_success 1", 2 when it answered otherwise,
                                     1 when it never answered.
  pcap-rtt FILE [--net CIDR]         match ICMP echo request -> reply in a classic pcap file by
                                     (peer address, id, seq); print wire RTT stats as JSON.
  report DIR                         aggregate DIR/run-*.kv, DIR/wrk-*.txt, DIR/pcap-*.json and
                                     DIR/exporter-*.kv into DIR/results.json and DIR/table.md and
                                     print the markdown table.
"""

import ipaddress
import json
import os
import re
import struct
import sys
import time
import urllib.error
import urllib.request

from bench_common import fmt, num, ratio, read_kv


# ---------------------------------------------------------------------------------------------
# wait-probe


def wait_probe(url, out, timeout):
    deadline = time.monotonic() + timeout
    last_err = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = resp.read().decode("utf-8", "replace")
                status = resp.status
        except urllib.error.HTTPError as e:
            body = e.read().decode("utf-8", "replace")
            status = e.code
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            last_err = e
            time.sleep(0.1)
            continue
        with open(out, "w") as f:
            f.write(body)
        if status == 200 and re.search(r"^probe_success 1$", body, re.M):
            return 0
        sys.stderr.write("probe answered with status %d but did not succeed:\n%s\n" % (status, body))
        return 2
    sys.stderr.write("no answer from %s within %ss (last error: %s)\n" % (url, timeout, last_err))
    return 1


# ---------------------------------------------------------------------------------------------
# pcap-rtt

PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276


def ip_payload_offset(linktype, pkt):
    """Offset of the IPv4 header in pkt, or None if it is not IPv4."""
    if linktype == LINKTYPE_ETHERNET:
        off = 12
        ethertype = struct.unpack_from("!H", pkt, off)[0] if len(pkt) >= 14 else 0
        off += 2
        while ethertype in (0x8100, 0x88A8) and len(pkt) >= off + 4:  # VLAN tags
            ethertype = struct.unpack_from("!H", pkt, off + 2)[0]
            off += 4
        return off if ethertype == 0x0800 else None
    if linktype == LINKTYPE_LINUX_SLL:
        if len(pkt) < 16:
            return None
        return 16 if struct.unpack_from("!H", pkt, 14)[0] == 0x0800 else None
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(pkt) < 20:
            return None
        return 20 if struct.unpack_from("!H", pkt, 0)[0] == 0x0800 else None
    if linktype == LINKTYPE_RAW:
        return 0 if pkt and pkt[0] >> 4 == 4 else None
    raise SystemExit("unsupported pcap link type %d" % linktype)


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def pcap_rtt(path, net):
    net = ipaddress.ip_network(net)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise SystemExit("%s: too short for a pcap file (is it pcapng? use tcpdump -w, not -w with pcapng)" % path)
    magic = data[:4]
    if magic not in PCAP_MAGIC:
        raise SystemExit("%s: not a classic pcap file (magic %s)" % (path, magic.hex()))
    endian, tick = PCAP_MAGIC[magic]
    _vmaj, _vmin, _tz, _sig, snaplen, linktype = struct.unpack_from(endian + "HHiIII", data, 4)
    linktype &= 0x0FFFFFFF
    rec = struct.Struct(endian + "IIII")
    pos = 24
    pending = {}  # (peer, id, seq) -> request timestamp (ns)
    rtts = []
    n_pkts = n_req = n_rep = dup_req = unmatched_rep = outside = truncated = 0
    first_ts = last_ts = None
    while pos + 16 <= len(data):
        sec, frac, incl, _orig = rec.unpack_from(data, pos)
        pos += 16
        pkt = data[pos:pos + incl]
        pos += incl
        n_pkts += 1
        ts = sec * 1_000_000_000 + (frac if tick == 1e-9 else frac * 1000)
        first_ts = ts if first_ts is None else first_ts
        last_ts = ts
        off = ip_payload_offset(linktype, pkt)
        if off is None or len(pkt) < off + 20:
            continue
        ihl = (pkt[off] & 0x0F) * 4
        if pkt[off + 9] != 1:  # not ICMP
            continue
        src = ipaddress.IPv4Address(pkt[off + 12:off + 16])
        dst = ipaddress.IPv4Address(pkt[off + 16:off + 20])
        icmp = off + ihl
        if len(pkt) < icmp + 8:
            truncated += 1
            continue
        itype, _code, _csum, ident, seq = struct.unpack_from("!BBHHH", pkt, icmp)
        if itype == 8:
            if dst not in net:
                outside += 1
            key = (dst, ident, seq)
            if key in pending:
                dup_req += 1
            pending[key] = ts
            n_req += 1
        elif itype == 0:
            if src not in net:
                outside += 1
            n_rep += 1
            t0 = pending.pop((src, ident, seq), None)
            if t0 is None:
                unmatched_rep += 1
            else:
                rtts.append(ts - t0)
    rtts_us = sorted(r / 1000.0 for r in rtts)
    n = len(rtts_us)
    return {
        "file": os.path.basename(path),
        "snaplen": snaplen,
        "linktype": linktype,
        "timestamp_precision": "ns" if tick == 1e-9 else "us",
        "packets": n_pkts,
        "echo_requests": n_req,
        "echo_replies": n_rep,
        "matched": n,
        "unanswered_requests": len(pending),
        "unmatched_replies": unmatched_rep,
        "duplicate_request_keys": dup_req,
        "packets_outside_test_net": outside,
        "truncated": truncated,
        "capture_seconds": (last_ts - first_ts) / 1e9 if n_pkts else 0.0,
        "wire_rtt_mean_us": sum(rtts_us) / n if n else None,
        "wire_rtt_min_us": rtts_us[0] if n else None,
        "wire_rtt_p50_us": percentile(rtts_us, 50),
        "wire_rtt_p99_us": percentile(rtts_us, 99),
        "wire_rtt_max_us": rtts_us[-1] if n else None,
    }


# ---------------------------------------------------------------------------------------------
# report


def parse_wrk(path):
    res = {}
    with open(path) as f:
        text = f.read()
    m = re.search(r"^MPB_RESULT (.*)$", text, re.M)
    if not m:
        return None
    for tok in m.group(1).split():
        k, v = tok.split("=", 1)
        res[k] = float(v) if ("." in v or "e" in v) else int(v)
    return res


def report(d):
    meta = read_kv(os.path.join(d, "meta.kv"))
    modes = meta.get("modes", "ping raw").split()
    exporters = meta.get("exporters", "meshprobe blackbox").split()
    concs = [int(c) for c in meta.get("concurrencies", "64 1024").split()]
    c_rtt = int(meta.get("rtt_concurrency", "256"))
    results = {"meta": meta, "runs": {}, "exporters": {}}

    def run(mode, exp, c):
        key = "%s-%s-c%d" % (mode, exp, c)
        if key in results["runs"]:
            return results["runs"][key]
        kvp = os.path.join(d, "run-%s.kv" % key)
        wp = os.path.join(d, "wrk-%s.txt" % key)
        pp = os.path.join(d, "pcap-%s.json" % key)
        r = {"present": os.path.exists(kvp)}
        if r["present"]:
            kv = read_kv(kvp)
            r.update(kv)
            w = parse_wrk(wp) if os.path.exists(wp) else None
            r["wrk"] = w
            if w:
                dur = w["duration_us"] / 1e6
                r["probes_per_s"] = w["requests"] / dur if dur > 0 else None
                r["ok_per_s"] = w["ok"] / dur if dur > 0 else None
                r["failed"] = (w["lua_failed"] + w["err_connect"] + w["err_read"]
                               + w["err_write"] + w["err_timeout"])
                ticks = num(kv.get("cpu_ticks_after")) - num(kv.get("cpu_ticks_before"))
                hz = num(kv.get("clk_tck")) or 100.0
                r["cpu_s"] = ticks / hz
                r["cpu_us_per_probe"] = (ticks / hz * 1e6 / w["requests"]) if w["requests"] else None
                r["reported_rtt_mean_us"] = (w["rtt_sum"] / w["rtt_n"] * 1e6) if w["rtt_n"] else None
            if os.path.exists(pp):
                with open(pp) as f:
                    r["pcap"] = json.load(f)
        results["runs"][key] = r
        return r

    for mode in modes:
        for exp in exporters:
            p = os.path.join(d, "exporter-%s-%s.kv" % (mode, exp))
            results["exporters"]["%s-%s" % (mode, exp)] = read_kv(p) if os.path.exists(p) else {}
            for c in concs + [c_rtt]:
                run(mode, exp, c)

    def metric_rows(mode):
        rows = []

        def get(exp, fn):
            try:
                return fn(exp)
            except (KeyError, TypeError, ZeroDivisionError):
                return None

        for c in concs:
            rows.append(("probes/s @c%d" % c, lambda e, c=c: run(mode, e, c)["probes_per_s"], 0))
        for c in concs:
            rows.append(("CPU µs/probe @c%d" % c, lambda e, c=c: run(mode, e, c)["cpu_us_per_probe"], 1))
        rows.append(("peak RSS MiB (VmHWM)",
                     lambda e: num(results["exporters"]["%s-%s" % (mode, e)]["vmhwm_kb"]) / 1024.0, 1))
        rows.append(("RSS MiB at end (VmRSS)",
                     lambda e: num(results["exporters"]["%s-%s" % (mode, e)]["vmrss_kb"]) / 1024.0, 1))
        for c in concs + [c_rtt]:
            rows.append(("failed probes @c%d" % c, lambda e, c=c: run(mode, e, c)["failed"], 0))
        rows.append(("reported RTT mean µs @c%d" % c_rtt,
                     lambda e: run(mode, e, c_rtt)["reported_rtt_mean_us"], 1))
        rows.append(("wire RTT mean µs @c%d (pcap)" % c_rtt,
                     lambda e: run(mode, e, c_rtt)["pcap"]["wire_rtt_mean_us"], 1))
        rows.append(("reported − wire RTT µs @c%d" % c_rtt,
                     lambda e: run(mode, e, c_rtt)["reported_rtt_mean_us"]
                     - run(mode, e, c_rtt)["pcap"]["wire_rtt_mean_us"], 1))
        out = []
        for name, fn, digits in rows:
            vals = {e: get(e, fn) for e in exporters}
            out.append((name, vals, digits))
        return out

    lines = []
    a, b = ("meshprobe", "blackbox") if exporters == ["meshprobe", "blackbox"] else (exporters[0], exporters[-1])
    show_ratio = len(exporters) == 2
    hdr = "| sockets | metric | " + " | ".join(exporters) + (" | %s/%s |" % (a, b) if show_ratio else " |")
    lines.append(hdr)
    lines.append("|" + "---|" * (2 + len(exporters) + (1 if show_ratio else 0)))
    table = {}
    for mode in modes:
        label = {"ping": "ping (dgram allowed)", "raw": "raw only"}.get(mode, mode)
        table[mode] = {}
        for name, vals, digits in metric_rows(mode):
            table[mode][name] = vals
            cells = [fmt(vals[e], digits) for e in exporters]
            line = "| %s | %s | %s |" % (label, name, " | ".join(cells))
            if show_ratio:
                line += " %s |" % ratio(vals[a], vals[b])
            lines.append(line)
    results["table"] = table

    notes = []
    notes.append("")
    notes.append("probes/s = completed HTTP responses per second (wrk Requests/sec), failed ones included; "
                 "CPU µs/probe = exporter utime+stime over the measured run / completed responses; "
                 "failed = non-200 or no `probe_success 1` + wrk socket errors (connect/read/write/timeout).")
    notes.append("RTT rows: mean of the exporter's reported phase=\"rtt\" over successful probes vs mean "
                 "reply−request time of the same run's echo packets matched by (peer, id, seq) in the pcap.")
    for mode in modes:
        for exp in exporters:
            r = run(mode, exp, c_rtt)
            p = r.get("pcap")
            if p:
                w = r.get("wrk") or {}
                notes.append("- %s/%s @c%d pcap: %d requests, %d replies, %d matched, %d unanswered, "
                             "%d unmatched replies, %d dup keys; tcpdump captured %s of %s, kernel drops %s; "
                             "wrk ok probes %s"
                             % (mode, exp, c_rtt, p["echo_requests"], p["echo_replies"], p["matched"],
                                p["unanswered_requests"], p["unmatched_replies"],
                                p["duplicate_request_keys"], r.get("tcpdump_captured", "?"),
                                r.get("tcpdump_received", "?"), r.get("tcpdump_dropped", "?"),
                                w.get("ok", "?")))
            for c in concs + [c_rtt]:
                rr = run(mode, exp, c)
                if rr.get("present") and rr.get("wrk") is None:
                    notes.append("- %s/%s @c%d: no MPB_RESULT line in the wrk output (see wrk-%s-%s-c%d.txt)"
                                 % (mode, exp, c, mode, exp, c))
                if rr.get("exporter_alive_after") == "0":
                    notes.append("- %s/%s @c%d: EXPORTER DIED during the run" % (mode, exp, c))
                if rr.get("sockets_mid_run"):
                    notes.append("- %s/%s @c%d sockets mid-run (prober netns): %s"
                                 % (mode, exp, c, rr["sockets_mid_run"]))
    text = "\n".join(lines + notes) + "\n"
    with open(os.path.join(d, "table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=str, sort_keys=True)
    sys.stdout.write(text)
    return 0


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 64
    cmd, args = argv[1], argv[2:]
    if cmd == "wait-probe":
        timeout = 30.0
        if "--timeout" in args:
            i = args.index("--timeout")
            timeout = float(args[i + 1])
            del args[i:i + 2]
        return wait_probe(args[0], args[1], timeout)
    if cmd == "pcap-rtt":
        net = "198.18.0.0/15"
        if "--net" in args:
            i = args.index("--net")
            net = args[i + 1]
            del args[i:i + 2]
        print(json.dumps(pcap_rtt(args[0], net), indent=2))
        return 0
    if cmd == "report":
        return report(args[0])
    sys.stderr.write(__doc__)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
