#!/usr/bin/python3
"""The Python maps people use today, on the same data as pmap_bench.

Writes a TSV: peer, operation, ops_per_s, durability. Run with Debian's
python3 (python3-diskcache, python3-sqlitedict).

  peers.py --n N --dir DIR --out FILE
"""
import argparse
import os
import random
import shutil
import time

import diskcache
import sqlitedict


def mix(x):  # splitmix64, as in pmap_bench.cpp
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def data(n):
    keys = ["%016x" % mix(i) for i in range(n)]
    values = [(str(i) + "v" * 100)[:100] for i in range(n)]
    return keys, values


def timed(fn, count):
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    n = args.n
    keys, values = data(n)
    order = [random.Random(7).randrange(n) for _ in range(n)]
    rows = []

    path = os.path.join(args.dir, "diskcache")
    shutil.rmtree(path, ignore_errors=True)
    with diskcache.Cache(path) as cache:  # SQLite WAL, synchronous=NORMAL by default
        def sets():
            for k, v in zip(keys, values):
                cache.set(k, v)

        def gets():
            for i in order:
                cache.get(keys[i])

        rows.append(("diskcache", "set", timed(sets, n), "each set its own transaction, WAL, synchronous=NORMAL"))
        rows.append(("diskcache", "get", timed(gets, n), "reads SQLite"))

    path = os.path.join(args.dir, "sqlitedict.sqlite")
    if os.path.exists(path):
        os.remove(path)
    with sqlitedict.SqliteDict(path, autocommit=False) as d:  # it sets synchronous=OFF
        def sets():
            for k, v in zip(keys, values):
                d[k] = v
            d.commit()

        def gets():
            for i in order:
                d[keys[i]]

        rows.append(("sqlitedict", "set", timed(sets, n), "one commit at the end, synchronous=OFF (not durable)"))
        rows.append(("sqlitedict", "get", timed(gets, n), "reads SQLite through a worker thread"))

    with open(args.out, "w") as f:
        f.write("peer\toperation\tops_per_s\tdurability\n")
        for r in rows:
            f.write("%s\t%s\t%.1f\t%s\n" % r)
            print("%-10s %-4s %12.1f ops/s  (%s)" % r)


if __name__ == "__main__":
    main()
