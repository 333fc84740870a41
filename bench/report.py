#!/usr/bin/python3
"""Turns pmap_bench's and peers.py's TSV into BENCHMARKS.md and a plot.

  report.py RESULTS.tsv PEERS.tsv OUT.md PLOT.svg "how it was run"
"""
import csv
import os
import subprocess
import sys


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def fmt(x, unit):
    x = float(x)
    if unit == "s":
        return "%.3f s" % x
    if unit == "B":
        return "%.0f B" % x
    if unit == "ms":
        return "%.1f ms" % x
    if unit == "bytes/entry":
        return "%.0f B/entry" % x
    suffix = " ops/s" if unit == "ops/s" else ""
    if x >= 1e6:
        return "%.2f M%s" % (x / 1e6, suffix)
    if x >= 1e3:
        return "%.1f k%s" % (x / 1e3, suffix)
    return "%.0f%s" % (x, suffix)


def met(row):
    t = row["target"]
    r = float(row["ratio"])
    if t.startswith(">="):
        return "yes" if r >= float(t[2:].strip().rstrip("x")) else "**no**"
    if t.startswith("<="):
        return "yes" if r <= float(t[2:].strip().rstrip("x")) else "**no**"
    return ""


def main():
    results, peers, out_md, out_svg, how = sys.argv[1:6]
    rows = read(results)
    peer_rows = read(peers) if os.path.exists(peers) else []
    md = ["# Benchmarks", "",
          "Produced by `./scripts/bench.sh` (%s). Every figure is printed beside its" % how,
          "baseline, measured in the same process (one per workload), on the same file system, in the same run;",
          "the ratio is the result (for times and bytes, lower is better). Absolute numbers on",
          "this shared 2-core virtual machine are noise. Data: 16-byte keys, 100-byte values.", "",
          "![ratios](docs/bench/ratios.svg)", "",
          "| workload | variant | persistent-map | baseline | ratio | target | met | baseline is | note |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append("| %s | %s | %s | %s | %.2fx | %s | %s | %s | %s |" % (
            r["workload"], r["variant"], fmt(r["ours"], r["unit"]), fmt(r["baseline"], r["unit"]),
            float(r["ratio"]), r["target"], met(r), r["baseline_name"], r["note"]))
    if peer_rows:
        ours_get = next(float(r["ours"]) for r in rows if r["workload"].startswith("reads") and r["variant"] == "1 thread")
        ours_bulk = max(float(r["ours"]) for r in rows if r["workload"] == "bulk durable writes")
        ours_awaited = next(float(r["ours"]) for r in rows
                            if r["workload"] == "awaited durable writes" and r["variant"].startswith("1 thread"))
        md += ["", "## Peers: the Python maps people use today", "",
               "Same keys and values, same machine, same run (`bench/peers/peers.py`, Debian's python3).",
               "persistent-map's sets are durable (SQLite WAL, synchronous=FULL).", "",
               "| peer | operation | peer ops/s | durability of the peer | persistent-map ops/s | ratio | target |",
               "|---|---|---|---|---|---|---|"]
        for p in peer_rows:
            peer = float(p["ops_per_s"])
            if p["operation"] == "get":
                ours, what, target = ours_get, "get, 1 thread", ">= 20x" if p["peer"] == "diskcache" else ""
                md.append("| %s | get | %s | %s | %s (%s) | %.1fx | %s |" % (
                    p["peer"], fmt(peer, ""), p["durability"], fmt(ours, ""), what, ours / peer, target))
            else:
                target = ">= 3x" if p["peer"] == "diskcache" else ""
                md.append("| %s | set | %s | %s | %s (bulk, 8 threads) / %s (awaited, 1 thread) | %.1fx / %.2fx | %s |" % (
                    p["peer"], fmt(peer, ""), p["durability"], fmt(ours_bulk, ""), fmt(ours_awaited, ""),
                    ours_bulk / peer, ours_awaited / peer, target))
    notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            md.append(f.read().rstrip("\n"))
    with open(out_md, "w") as f:
        f.write("\n".join(md) + "\n")

    dat = out_svg + ".dat"
    with open(dat, "w") as f:
        for i, r in enumerate(rows):
            label = (r["workload"] + " / " + r["variant"]).replace('"', "'")
            ratio = float(r["ratio"])
            advantage = ratio if r["unit"] == "ops/s" else (1 / ratio if ratio > 0 else 0)
            f.write('%d "%s" %g\n' % (i, label, advantage))
    script = """
set terminal svg size 1000,560 font "sans,11" background rgb "white"
set output "%s"
set title "persistent-map's advantage over its baseline, same run (log scale; above 1 = better)"
set style fill solid 0.7
set boxwidth 0.7
set logscale y
set yrange [0.1:100]
set grid ytics
set xtics rotate by -40 left font ",9"
set bmargin 12
set arrow from graph 0, first 1 to graph 1, first 1 nohead lc rgb "black"
plot "%s" using 1:3:xtic(2) with boxes notitle lc rgb "#3a7bd5"
""" % (out_svg, dat)
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    os.remove(dat)


if __name__ == "__main__":
    main()
