#!/usr/bin/env python3
"""Link benchmark: how much of a long-distance link `hotfolder upload` uses.

Each chunk of a file waits for its answer before the next is sent, so on a WAN every chunk
costs a round trip in which that file sends nothing. The emulator models the link
(`hotfolder emulator --sink --latency 40ms --link-rate 1Gbit/s`: one rate shared by all
connections, paced as the bodies are read so that TCP backpressure slows the client, and every
answer one latency late), and this script prints the link efficiency, bytes per second over
the link rate, of whole `hotfolder upload` runs (wall time: login, creates and URLs included):

  * one 2 GiB file, and ten 200 MiB files at `parallel` 1, 2 and 4,
  * in chunks of 8, 16, 32 and 64 MiB and with `chunk_size = "auto"` (the default; a fresh
    state dir each run, so auto starts from the create's and URL's round trips),
  * at each --latencies, plus the same link with no latency as the reference: the auto target
    is one 2 GiB file at 40 ms within 10 % of the time it takes there.

One run per cell; files are generated in a temp dir (--dir) and deleted afterwards. The no-latency
rows also tell whether this machine can hold the link rate at all: if the best of them is well
under 1.0, the client and the emulator are CPU bound (both share this machine's cores), and a
lower --link-rate (400Mbit/s) measures the link rather than the CPU.

    python3 bench/link_bench.py [--link-rate 1Gbit/s] [--latencies 10,40] [--chunks 8,16,32,64,auto]
                                [--parallel 1,2,4] [--big 2048] [--files 10] [--file-size 200] [--dir /tmp]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from harness import account_toml, bench_env, build_release, start_emulator, write_mp4

MIB = 1024 * 1024
UNITS = {"kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8, "kib": 2**10, "mib": 2**20, "gib": 2**30,
         "kb": 1e3, "mb": 1e6, "gb": 1e9}


def parse_rate(text):
    """Bytes per second of a rate written like the emulator's --link-rate: 1Gbit/s, 100MiB/s."""
    number = text.strip().lower().removesuffix("/s").strip()
    digits = len(number) - len(number.lstrip("0123456789."))
    unit = number[digits:].strip()
    if unit not in UNITS:
        sys.exit(f"--link-rate {text!r}: use a unit such as Gbit/s, Mbit/s or MiB/s")
    return float(number[:digits]) * UNITS[unit]


def upload(binary, work, base, run_id, chunk, parallel, paths):
    """One `hotfolder upload` of `paths` in a fresh state dir; returns (wall seconds, lines)."""
    state = os.path.join(work, "state", run_id)
    config = os.path.join(work, f"{run_id}.toml")
    chunk_line = 'chunk_size = "auto"' if chunk == "auto" else f'chunk_size = "{chunk} MiB"'
    with open(config, "w") as f:
        f.write(account_toml(base) + f"""
[upload]
{chunk_line}
parallel = {parallel}

[state]
dir = "{state}"

[log]
dir = "{state}/logs"
""")
    start = time.perf_counter()
    done = subprocess.run([binary, "upload", "--config", config, "--json", *paths],
                          env=bench_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or len(lines) != len(paths) or any(l["status"] != "uploaded" for l in lines):
        sys.exit(f"hotfolder upload failed ({run_id}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    shutil.rmtree(state, ignore_errors=True)
    return seconds, lines


def sizes_used(lines):
    """The chunk sizes the run used, as text: "48" or "24-48" (MiB)."""
    used = sorted({l["chunk_size"] // MIB for l in lines if l.get("chunk_size")})
    return str(used[0]) if len(used) == 1 else f"{used[0]}-{used[-1]}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--link-rate", default="1Gbit/s")
    parser.add_argument("--latencies", default="10,40", help="milliseconds, comma-separated")
    parser.add_argument("--chunks", default="8,16,32,64,auto", help="MiB or auto, comma-separated")
    parser.add_argument("--parallel", default="1,2,4", help="for the many-files workload")
    parser.add_argument("--big", type=int, default=2048, help="MiB of the one big file (0: skip)")
    parser.add_argument("--files", type=int, default=10, help="how many files in the many-files workload (0: skip)")
    parser.add_argument("--file-size", type=int, default=200, help="MiB of each of those files")
    parser.add_argument("--dir", default=None, help="where the temp dir with the files goes")
    args = parser.parse_args()

    rate = parse_rate(args.link_rate)
    latencies = [int(x) for x in args.latencies.split(",") if x.strip()]
    chunks = [c.strip() if c.strip() == "auto" else int(c) for c in args.chunks.split(",") if c.strip()]
    parallels = [int(x) for x in args.parallel.split(",") if x.strip()]
    binary = build_release()
    work = tempfile.mkdtemp(prefix="hotfolder-link-bench-", dir=args.dir)
    emulator = None
    load_before = os.getloadavg()
    results = {"link_rate_Bps": rate, "load_before": load_before, "cells": []}
    try:
        big = os.path.join(work, "big.mp4")
        if args.big:
            write_mp4(big, args.big * MIB)
        many = [os.path.join(work, f"file-{i:02}.mp4") for i in range(args.files)]
        for i, path in enumerate(many):
            write_mp4(path, args.file_size * MIB)
        print(f"link {args.link_rate} = {rate / MIB:.1f} MiB/s; load average before: "
              f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} on {os.cpu_count()} cores")
        print("efficiency = file bytes / wall time of the whole `hotfolder upload` run / link rate;"
              " auto's sizes in MiB in brackets\n")

        def cell(latency, workload, chunk, parallel, paths):
            run_id = f"{workload}-{latency}ms-{chunk}-p{parallel}"
            seconds, lines = upload(binary, work, base, run_id, chunk, parallel, paths)
            total = sum(os.path.getsize(p) for p in paths)
            efficiency = total / seconds / rate
            shown = f"{efficiency:.2f}" + (f" ({sizes_used(lines)})" if chunk == "auto" else "")
            results["cells"].append({"latency_ms": latency, "workload": workload, "chunk": chunk,
                                     "parallel": parallel, "seconds": round(seconds, 2),
                                     "efficiency": round(efficiency, 3), "chunk_sizes": sizes_used(lines)})
            print(f"  {run_id}: {seconds:.2f} s, {shown}", file=sys.stderr, flush=True)
            return shown, seconds

        table_big, table_many, reference = {}, {}, {}
        for latency in [0] + latencies:
            emulator, base = start_emulator(binary, "--sink", "--latency", f"{latency}ms", "--link-rate", args.link_rate)
            try:
                for chunk in chunks:
                    if latency == 0 and chunk not in ("auto", 64):
                        continue  # the reference: the default, and the biggest chunks
                    if args.big:
                        shown, seconds = cell(latency, "big", chunk, 1, [big])
                        table_big[(latency, chunk)] = shown
                        if chunk == "auto":
                            reference[latency] = seconds
                    if args.files and latency > 0:
                        for parallel in parallels:
                            table_many[(latency, chunk, parallel)] = cell(latency, "many", chunk, parallel, many)[0]
            finally:
                emulator.terminate()
                emulator.wait()
                emulator = None

        chunk_name = lambda c: "auto" if c == "auto" else f"{c} MiB"
        if args.big:
            print(f"\nOne {args.big} MiB file ({args.link_rate}):\n")
            print("| chunks | " + " | ".join(f"{l} ms" for l in [0] + latencies) + " |")
            print("|---|" + "---|" * (len(latencies) + 1))
            for chunk in chunks:
                row = [table_big.get((l, chunk), "") for l in [0] + latencies]
                print(f"| {chunk_name(chunk)} | " + " | ".join(row) + " |")
        if args.files:
            print(f"\n{args.files} files of {args.file_size} MiB ({args.link_rate}), `parallel` 1, 2, 4:\n")
            heads = [f"{l} ms, p{p}" for l in latencies for p in parallels]
            print("| chunks | " + " | ".join(heads) + " |")
            print("|---|" + "---|" * len(heads))
            for chunk in chunks:
                row = [table_many.get((l, chunk, p), "") for l in latencies for p in parallels]
                print(f"| {chunk_name(chunk)} | " + " | ".join(row) + " |")
        if args.big and 0 in reference:
            ideal = args.big * MIB / rate
            print(f"\nauto, one {args.big} MiB file: {reference[0]:.2f} s with no latency"
                  f" (the link alone: {ideal:.2f} s)")
            for latency in latencies:
                if latency in reference:
                    slower = reference[latency] / reference[0] - 1
                    print(f"auto at {latency} ms: {reference[latency]:.2f} s, {slower:+.1%} against no latency"
                          + (" (target: within 10 %)" if latency == 40 else ""))
                    results[f"auto_{latency}ms_vs_no_latency"] = round(slower, 4)
            best = max((c["efficiency"] for c in results["cells"] if c["latency_ms"] == 0), default=0)
            if best < 0.95:
                print(f"\nWith no latency the best efficiency is {best:.2f}: this machine does not hold"
                      f" {args.link_rate} (client and emulator share its cores, CPU bound); a lower"
                      f" --link-rate measures the link rather than the CPU.")
        load_after = os.getloadavg()
        results["load_after"] = load_after
        print(f"\nload average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
        print(json.dumps(results))
    finally:
        if emulator is not None:
            emulator.terminate()
            emulator.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
