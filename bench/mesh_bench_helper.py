#!/usr/bin/env python3
"""Helper for bench/mesh_bench.sh (python3 standard library only).

Subcommands:
  wait-http URL [--timeout S]        poll URL until it answers 200; exit 0 then, 1 on timeout.
  scrape URL OUT [--gzip] [--prefix P] [--timeout S]
                                     GET URL (with Accept-Encoding: gzip if --gzip), store the
                                     body gzip-compressed in OUT, and print key=value lines: bytes
                                     on the wire, Content-Encoding, seconds, wall-clock time of
                                     request and response, series, and per sample name the number
                                     of samples (count.NAME) and their sum (sum.NAME; histogram
                                     _bucket lines left out).
  fping-stats FILE [--from BYTE]     sum the per-target "xmt/rcv/%loss" lines of the fping summary
                                     in FILE that starts at byte offset BYTE; print key=value.
  count-lines FILE PATTERN [--from BYTE]
                                     print how many lines of FILE after BYTE match the regex.
  report DIR                         aggregate DIR/meta.kv and DIR/run-*.kv into DIR/results.json
                                     and DIR/table.md and print the markdown table.
"""

import gzip
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

from bench_common import fmt, num, ratio, read_kv

PROGRAMS = ["meshprobe", "smokeping", "fping", "meshprobe-big"]

SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


# ---------------------------------------------------------------------------------------------
# /metrics parsing


def parse_exposition(text):
    """(series, {sample name: sum}, {sample name: count}) of a Prometheus text exposition."""
    sums = {}
    counts = {}
    series = 0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            continue
        series += 1
        name = m.group(1)
        counts[name] = counts.get(name, 0) + 1
        if name.endswith("_bucket"):
            continue
        try:
            v = float(m.group(3))
        except ValueError:
            continue
        sums[name] = sums.get(name, 0.0) + v
    return series, sums, counts


def fetch(url, want_gzip, timeout):
    req = urllib.request.Request(url)
    if want_gzip:
        req.add_header("Accept-Encoding", "gzip")
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
        status = resp.status
        encoding = resp.headers.get("Content-Encoding", "") or "identity"
    seconds = time.monotonic() - t0
    body = gzip.decompress(raw) if encoding == "gzip" else raw
    return status, raw, body, encoding, seconds


def wait_http(url, timeout):
    deadline = time.monotonic() + timeout
    state = "no answer yet"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                resp.read()
                if resp.status == 200:
                    return 0
                state = "status %d" % resp.status
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            state = "error: %s" % e
        time.sleep(0.1)
    sys.stderr.write("%s: no 200 answer within %ss (%s)\n" % (url, timeout, state))
    return 1


def scrape(url, out, want_gzip, prefix, timeout):
    t_request = time.time()
    status, raw, body, encoding, seconds = fetch(url, want_gzip, timeout)
    t_response = time.time()
    with open(out, "wb") as f:
        f.write(raw if encoding == "gzip" else gzip.compress(raw, 6))
    series, sums, counts = parse_exposition(body.decode("utf-8", "replace"))
    lines = [
        "t_request=%.6f" % t_request,
        "t_response=%.6f" % t_response,
        "status=%d" % status,
        "bytes=%d" % len(raw),
        "uncompressed_bytes=%d" % len(body),
        "content_encoding=%s" % encoding,
        "seconds=%.6f" % seconds,
        "series=%d" % series,
    ]
    for name in sorted(counts):
        lines.append("count.%s=%d" % (name, counts[name]))
    for name in sorted(sums):
        lines.append("sum.%s=%s" % (name, repr(sums[name])))
    for line in lines:
        print(prefix + line)
    return 0


# ---------------------------------------------------------------------------------------------
# fping

FPING_RE = re.compile(r"^(\S+)\s*:\s*xmt/rcv/%(?:loss|return) = (\d+)/(\d+)/")


def fping_stats(path, start):
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", "replace")
    hosts = xmt = rcv = lossy = 0
    worst = []
    for line in text.splitlines():
        m = FPING_RE.match(line)
        if not m:
            continue
        hosts += 1
        x, r = int(m.group(2)), int(m.group(3))
        xmt += x
        rcv += r
        if r < x:
            lossy += 1
            worst.append((x - r, m.group(1)))
    worst.sort(reverse=True)
    print("hosts=%d" % hosts)
    print("xmt=%d" % xmt)
    print("rcv=%d" % rcv)
    print("lost=%d" % (xmt - rcv))
    print("hosts_with_loss=%d" % lossy)
    print("worst=%s" % ",".join("%s:%d" % (h, n) for n, h in worst[:5]))
    return 0


def count_lines(path, pattern, start):
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", "replace")
    rx = re.compile(pattern)
    print(sum(1 for line in text.splitlines() if rx.search(line)))
    return 0


# ---------------------------------------------------------------------------------------------
# report


def derive(kv):
    """Numbers of one program run from its run-*.kv."""
    r = {"present": bool(kv)}
    if not kv:
        return r
    prog = kv.get("program")
    hz = num(kv.get("clk_tck")) or 100.0
    wall = num(kv.get("window_seconds"))
    t0, t1 = num(kv.get("cpu_ticks_before")), num(kv.get("cpu_ticks_after"))
    if None not in (wall, t0, t1) and wall > 0:
        r["cores"] = (t1 - t0) / hz / wall
    for key, field in (("rss_mib", "vmrss_kb"), ("hwm_mib", "vmhwm_kb"),
                       ("hwm_warmup_mib", "vmhwm_warmup_kb"), ("hwm_after_mib", "vmhwm_after_kb")):
        v = num(kv.get(field))
        r[key] = v / 1024.0 if v is not None else None
    r["threads"] = num(kv.get("threads"))
    r["sockets"] = kv.get("sockets_mid_window", "n/a")
    r["targets"] = num(kv.get("targets"))

    def d(key):  # end - start of a summed metric
        a, b = num(kv.get("start.sum." + key)), num(kv.get("end.sum." + key))
        return None if a is None or b is None else b - a

    def e(key):
        return num(kv.get("end.sum." + key))

    if prog in ("meshprobe", "meshprobe-big"):
        sent_w, lost_w = d("meshprobe_mesh_sent_total"), d("meshprobe_mesh_lost_total")
        r["sent_window"], r["lost_window"] = sent_w, lost_w
        r["sent_total"], r["lost_total"] = e("meshprobe_mesh_sent_total"), e("meshprobe_mesh_lost_total")
        r["late_window"], r["late_total"] = d("meshprobe_mesh_late_sends_total"), e("meshprobe_mesh_late_sends_total")
        r["late_before"] = num(kv.get("start.sum.meshprobe_mesh_late_sends_total"))
        # the plain scrape after the window reads the counter before it renders; the gzip scrape
        # that follows ~1 s later reads it again: the difference is what one plain scrape caused
        a, b = num(kv.get("scrape_plain.sum.meshprobe_mesh_late_sends_total")), \
            num(kv.get("scrape_gzip.sum.meshprobe_mesh_late_sends_total"))
        r["late_per_scrape"] = None if a is None or b is None else b - a
        r["send_errors_total"] = e("meshprobe_mesh_send_errors_total")
        r["duplicates_total"] = e("meshprobe_mesh_duplicates_total")
        r["reordered_total"] = e("meshprobe_mesh_reordered_total")
        r["mesh_targets"] = e("meshprobe_mesh_targets")
        dc, ds = d("meshprobe_mesh_rtt_seconds_count"), d("meshprobe_mesh_rtt_seconds_sum")
        r["rtt_mean_us"] = ds / dc * 1e6 if dc else None
    elif prog == "smokeping":
        req_w, cnt_w = d("smokeping_requests_total"), d("smokeping_response_duration_seconds_count")
        r["sent_window"] = req_w
        r["lost_window"] = None if req_w is None or cnt_w is None else req_w - cnt_w
        req_t, cnt_t = e("smokeping_requests_total"), e("smokeping_response_duration_seconds_count")
        r["sent_total"] = req_t
        r["lost_total"] = None if req_t is None or cnt_t is None else req_t - cnt_t
        r["send_errors_total"] = e("smokeping_send_errors_total")
        r["duplicates_total"] = e("smokeping_response_duplicates_total")
        ds = d("smokeping_response_duration_seconds_sum")
        r["rtt_mean_us"] = ds / cnt_w * 1e6 if cnt_w else None
    elif prog == "fping":
        r["sent_window"], r["lost_window"] = num(kv.get("window.xmt")), num(kv.get("window.lost"))
        r["sent_total"], r["lost_total"] = num(kv.get("final.xmt")), num(kv.get("final.lost"))
        r["rtt_mean_us"] = None
    # the counters' own window: between the two scrapes (meshprobe, smokeping) or the two SIGQUITs
    # (fping, signalled at the CPU window's edges)
    # each scrape reads the counters somewhere between its request and its response: take the
    # midpoints (an overloaded exporter can take seconds to answer)
    t = [num(kv.get(k)) for k in ("start.t_request", "start.t_response", "end.t_request", "end.t_response")]
    counter_window = ((t[2] + t[3]) - (t[0] + t[1])) / 2 if None not in t else wall
    r["counter_window_s"] = counter_window
    if r.get("sent_window") is not None and counter_window:
        r["pps"] = r["sent_window"] / counter_window
    x0, x1 = num(kv.get("ctxt_switches_before")), num(kv.get("ctxt_switches_after"))
    if None not in (x0, x1) and wall:
        r["cs_per_s"] = (x1 - x0) / wall
    if r.get("cores") is not None and r.get("pps"):
        r["us_per_echo"] = r["cores"] * 1e6 / r["pps"]
    for k in ("plain", "gzip"):
        r["scrape_%s_bytes" % k] = num(kv.get("scrape_%s.bytes" % k))
        sec = num(kv.get("scrape_%s.seconds" % k))
        r["scrape_%s_ms" % k] = sec * 1000 if sec is not None else None
        r["scrape_%s_encoding" % k] = kv.get("scrape_%s.content_encoding" % k)
    r["series"] = num(kv.get("scrape_plain.series"))
    r["alive"] = kv.get("alive_at_end", "?")
    return r


def loss_cell(lost, sent):
    if lost is None or sent is None:
        return "n/a"
    return "%s / %s" % (fmt(lost), fmt(sent))


def report(d):
    meta = read_kv(os.path.join(d, "meta.kv"))
    modes = meta.get("modes", "ping raw").split()
    programs = [p for p in PROGRAMS if p in meta.get("programs", " ".join(PROGRAMS)).split()]
    naddr = meta.get("naddr", "1000")
    naddr_big = meta.get("naddr_big", "10000")
    results = {"meta": meta, "runs": {}}
    runs = {}
    for mode in modes:
        for prog in programs:
            p = os.path.join(d, "run-%s-%s.kv" % (mode, prog))
            kv = read_kv(p) if os.path.exists(p) else {}
            runs[(mode, prog)] = derive(kv)
            results["runs"]["%s-%s" % (mode, prog)] = {"kv": kv, "derived": runs[(mode, prog)]}

    title = {
        "meshprobe": "meshprobe %s" % naddr,
        "smokeping": "smokeping_prober %s" % naddr,
        "fping": "fping -l %s" % naddr,
        "meshprobe-big": "meshprobe %s" % naddr_big,
    }
    small = [p for p in programs if p != "meshprobe-big"]
    big = [p for p in programs if p == "meshprobe-big"]
    ratio_cols = []
    if "meshprobe" in programs and "fping" in programs:
        ratio_cols.append(("meshprobe", "fping"))
    if "meshprobe" in programs and "smokeping" in programs:
        ratio_cols.append(("meshprobe", "smokeping"))

    # (label, key or function, digits, show ratios)
    rows = [
        ("CPU cores (utime+stime / wall)", "cores", 4, True),
        ("CPU µs per echo request", "us_per_echo", 2, True),
        ("echo requests/s in window", "pps", 0, False),
        ("RSS MiB at end of window (VmRSS)", "rss_mib", 1, True),
        ("peak RSS MiB at end of window (VmHWM)", "hwm_mib", 1, True),
        ("peak RSS MiB before any /metrics scrape (VmHWM)", "hwm_warmup_mib", 1, True),
        ("peak RSS MiB after the end scrapes (VmHWM)", "hwm_after_mib", 1, True),
        ("threads at end", "threads", 0, False),
        ("context switches/s in window (all threads)", "cs_per_s", 0, False),
        ("/metrics bytes, plain", "scrape_plain_bytes", 0, False),
        ("/metrics bytes, Accept-Encoding: gzip", "scrape_gzip_bytes", 0, False),
        ("/metrics series (sample lines)", "series", 0, False),
        ("/metrics scrape ms, plain / gzip",
         lambda r: None if r.get("scrape_plain_ms") is None else "%.1f / %s" % (
             r["scrape_plain_ms"],
             "%.1f" % r["scrape_gzip_ms"] if r.get("scrape_gzip_ms") is not None else "n/a"), 0, False),
        ("loss in window: lost / sent", lambda r: loss_cell(r.get("lost_window"), r.get("sent_window")), 0, False),
        ("loss since start: lost / sent", lambda r: loss_cell(r.get("lost_total"), r.get("sent_total")), 0, False),
        ("late sends: before window / in window / since start",
         lambda r: None if r.get("late_total") is None else "%s / %s / %s" % (
             fmt(r.get("late_before")), fmt(r.get("late_window")), fmt(r["late_total"])), 0, False),
        ("late sends caused by one plain /metrics scrape", "late_per_scrape", 0, False),
        ("mean RTT µs in window (reported)", "rtt_mean_us", 1, False),
        ("sockets in prober netns mid-window", "sockets", 0, False),
    ]

    def cell(r, key):
        if not r.get("present"):
            return None
        try:
            return key(r) if callable(key) else r.get(key)
        except (TypeError, ZeroDivisionError, KeyError):
            return None

    lines = []
    hdr = ["sockets", "metric"] + [title[p] for p in small]
    hdr += ["%s/%s" % (a, b) for a, b in ratio_cols]
    hdr += [title[p] for p in big]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "---|" * len(hdr))
    for mode in modes:
        label = {"ping": "ping (dgram allowed)", "raw": "raw only"}.get(mode, mode)
        for name, key, digits, show_ratio in rows:
            vals = {p: cell(runs[(mode, p)], key) for p in programs}
            cells = [label, name] + [fmt(vals[p], digits) if vals[p] is not None else "–" for p in small]
            for a, b in ratio_cols:
                cells.append(ratio(vals[a], vals[b]) if show_ratio else "")
            cells += [fmt(vals[p], digits) if vals[p] is not None else "–" for p in big]
            lines.append("| " + " | ".join(cells) + " |")

    notes = [""]
    notes.append("CPU = utime+stime of the process (all threads) from /proc/PID/stat over the measurement "
                 "window (after the warm-up; no scrapes inside it) / wall time of the window; it includes "
                 "softirq work charged to the process (such as the peer namespace's echo replies on the veth). "
                 "RSS: VmRSS and VmHWM at the end of the window (one plain /metrics scrape happened at its "
                 "start); VmHWM also at the end of the warm-up, before any scrape, and after the plain "
                 "and gzip scrapes that follow the window. Loss: meshprobe sum(meshprobe_mesh_lost_total) of "
                 "sum(meshprobe_mesh_sent_total); smokeping sum(smokeping_requests_total) − "
                 "sum(smokeping_response_duration_seconds_count); fping the sum of its per-target xmt − rcv "
                 "(window: SIGQUIT interval summary; since start: final summary at SIGINT). The peer answers "
                 "every echo, so every lost packet is false loss. Late sends (meshprobe): the window's count "
                 "includes those caused by the scrape that opens it (a scrape reads the counter before it "
                 "renders); \"caused by one plain scrape\" = the counter in the gzip scrape ~1 s after the "
                 "window minus the counter in the plain scrape just before it.")
    # target checks
    targets = []
    for mode in modes:
        mp = runs.get((mode, "meshprobe"), {})
        fp = runs.get((mode, "fping"), {})
        bg = runs.get((mode, "meshprobe-big"), {})
        if mp.get("present"):
            c, f = mp.get("cores"), fp.get("cores") if fp.get("present") else None
            half = None if f is None else f / 2
            ok_cpu = c is not None and c <= 0.016 and (half is None or c <= half)
            rss = max(x for x in (mp.get("rss_mib"), mp.get("hwm_mib"), 0) if x is not None)
            targets.append("- %s, %s targets: CPU %s cores (target ≤ 0.016%s) → %s; RSS (max of VmRSS "
                           "and VmHWM at the end of the window) %.1f MiB (target ≤ 12 MB = 11.4 MiB) → %s"
                           % (mode, naddr, fmt(c, 4),
                              "" if half is None else " and ≤ fping/2 = %s" % fmt(half, 4),
                              "MET" if ok_cpu else "NOT MET", rss,
                              "MET" if rss <= 12e6 / 2**20 else "NOT MET"))
        if bg.get("present"):
            c = bg.get("cores")
            lw, lt = bg.get("lost_window"), bg.get("lost_total")
            ok = c is not None and c <= 0.15 and lw == 0 and lt == 0
            targets.append("- %s, %s targets: CPU %s cores (target ≤ 0.15), false loss %s in window / %s "
                           "since start (target 0) → %s"
                           % (mode, naddr_big, fmt(c, 4), fmt(lw), fmt(lt), "MET" if ok else "NOT MET"))
    if targets:
        notes.append("")
        notes.append("Targets from the issue:")
        notes.extend(targets)
    warn = []
    for (mode, prog), r in sorted(runs.items()):
        if r.get("present") and r.get("alive") != "1":
            warn.append("- %s/%s: PROCESS HAD EXITED before the end of its window" % (mode, prog))
        if r.get("present") and prog in ("meshprobe", "meshprobe-big"):
            enc = r.get("scrape_gzip_encoding")
            if enc and enc != "gzip":
                warn.append("- %s/%s: gzip scrape came back with Content-Encoding %s" % (mode, prog, enc))
        if r.get("present") and r.get("targets") and r.get("pps") is not None:
            expect = r["targets"] / num(meta.get("interval_s", "1"))
            if r["pps"] < 0.97 * expect:
                warn.append("- %s/%s: sent %.0f echo requests/s, below the %.0f/s the interval asks for"
                            % (mode, prog, r["pps"], expect))
    if warn:
        notes.append("")
        notes.append("Warnings:")
        notes.extend(warn)
    text = "\n".join(lines + notes) + "\n"
    results["table"] = text
    with open(os.path.join(d, "table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=str, sort_keys=True)
    sys.stdout.write(text)
    return 0


# ---------------------------------------------------------------------------------------------


def take(args, flag, n=1):
    """Removes every `flag v1 .. vn` from args; returns the list of value tuples."""
    out = []
    while flag in args:
        i = args.index(flag)
        out.append(tuple(args[i + 1:i + 1 + n]))
        del args[i:i + 1 + n]
    return out


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 64
    cmd, args = argv[1], argv[2:]
    timeout = [float(t[0]) for t in take(args, "--timeout")]
    start = [int(t[0]) for t in take(args, "--from")]
    start = start[-1] if start else 0
    if cmd == "wait-http":
        return wait_http(args[0], timeout[-1] if timeout else 30.0)
    if cmd == "scrape":
        want_gzip = bool(take(args, "--gzip", 0))
        prefix = [t[0] for t in take(args, "--prefix")]
        return scrape(args[0], args[1], want_gzip, prefix[-1] if prefix else "",
                      timeout[-1] if timeout else 30.0)
    if cmd == "fping-stats":
        return fping_stats(args[0], start)
    if cmd == "count-lines":
        return count_lines(args[0], args[1], start)
    if cmd == "report":
        return report(args[0])
    sys.stderr.write(__doc__)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
