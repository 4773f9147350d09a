"""What bench/bench_helper.py and bench/mesh_bench_helper.py share (standard library only): the
key=value files the bench scripts write, and the number formatting of their report tables."""


def read_kv(path):
    """key=value lines of PATH; blank lines and # comments are skipped, the last value wins."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#") or "=" not in line:
                continue
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def fmt(v, digits=0):
    """A table cell: thousands separators, `digits` decimals; None is n/a, text stays text."""
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if digits == 0:
        return "{:,.0f}".format(v)
    return "{:,.{d}f}".format(v, d=digits)


def ratio(a, b):
    """a / b for a ratio column: 2 decimals from 1 up, 3 significant digits below; n/a if unknown."""
    if a is None or b is None or isinstance(a, str) or isinstance(b, str) or b == 0:
        return "n/a"
    r = a / b
    return "{:.2f}".format(r) if abs(r) >= 1 else "{:.3g}".format(r)
