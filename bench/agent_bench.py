#!/usr/bin/env python3
"""Agent benchmark: detection latency, idle CPU while watching 10,000 files, and a start with
10,000 files already waiting. Loopback only: `hotfolder emulator` on 127.0.0.1.

    python3 bench/agent_bench.py [--files 10000] [--idle-seconds 60]

Targets: latency <= stable_for + 1 s; idle CPU < 1 s per minute with 10,000 files
watched; first upload within 3 s of starting with 10,000 files waiting; RSS <= 100 MiB.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

from harness import account_toml, bench_env, build_release, process_cpu, start_emulator, write_mp4


def stats(base):
    with urllib.request.urlopen(base + "_emulator/stats") as resp:
        return json.load(resp)


def rss_mib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def write_config(work, base, inbox, stable_for, extra_upload=""):
    path = os.path.join(work, "config.toml")
    with open(path, "w") as f:
        f.write(account_toml(base) + f"""
[upload]
{extra_upload}

[state]
dir = "{work}/state"

[log]
dir = "{work}/logs"
level = "warn"

[[folder]]
path = "{inbox}"
stable_for = "{stable_for}"
""")
    return path


def start_agent(binary, config):
    return subprocess.Popen([binary, "run", "--config", config], env=bench_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(agent):
    agent.terminate()
    try:
        agent.wait(timeout=15)
    except subprocess.TimeoutExpired:
        agent.kill()


def wait_for(condition, limit):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()

    binary = build_release()
    emulator, base = start_emulator(binary)
    work = tempfile.mkdtemp(prefix="hotfolder-agent-bench-")
    results = {}
    try:
        stats(base)

        # 1. Detection latency: last write -> the video is created on the server.
        inbox = os.path.join(work, "latency")
        os.makedirs(inbox)
        config = write_config(os.path.join(work), base, inbox, "1s")
        agent = start_agent(binary, config)
        time.sleep(1.0)
        latencies = []
        for i in range(3):
            before = stats(base)["videos_created"]
            # 1 MiB in pieces of 256 KiB, 0.1 s apart; the moov comes last.
            write_mp4(os.path.join(inbox, f"clip{i}.mp4"), 1024 * 1024, pause=0.1, piece=256 * 1024)
            last_write = time.monotonic()
            wait_for(lambda: stats(base)["videos_created"] > before, 15)
            latencies.append(time.monotonic() - last_write)
        stop(agent)
        results["detection_latency_s"] = [round(x, 2) for x in latencies]
        print(f"detection latency (stable_for = 1 s): {', '.join(f'{x:.2f}' for x in latencies)} s (target <= 2.0)")

        # 2. Idle: 10,000 files watched that are not for upload (wrong suffix), CPU over a period.
        idle_dir = os.path.join(work, "idle")
        os.makedirs(idle_dir)
        for i in range(args.files):
            sub = os.path.join(idle_dir, f"d{i // 1000}")
            os.makedirs(sub, exist_ok=True)
            open(os.path.join(sub, f"still{i}.txt"), "w").close()
        shutil.rmtree(os.path.join(work, "state"), ignore_errors=True)
        config = write_config(work, base, idle_dir, "10s")
        agent = start_agent(binary, config)
        time.sleep(5)
        cpu_start = process_cpu(agent.pid)
        time.sleep(args.idle_seconds)
        idle_cpu = process_cpu(agent.pid) - cpu_start
        stop(agent)
        per_minute = idle_cpu * 60 / args.idle_seconds
        results["idle_cpu_s_per_minute"] = round(per_minute, 3)
        print(f"idle CPU watching {args.files} files: {idle_cpu:.2f} s over {args.idle_seconds:.0f} s = {per_minute:.2f} s/min (target < 1)")

        # 3. Start with 10,000 files waiting: time to the first upload, RSS with all queued.
        backlog = os.path.join(work, "backlog")
        os.makedirs(backlog)
        for i in range(args.files):
            write_mp4(os.path.join(backlog, f"wait{i:05}.mp4"), 1024)
        past = time.time() - 3600
        for name in os.listdir(backlog):
            os.utime(os.path.join(backlog, name), (past, past))
        shutil.rmtree(os.path.join(work, "state"), ignore_errors=True)
        config = write_config(work, base, backlog, "10s")
        before = stats(base)["videos_created"]
        started = time.monotonic()
        agent = start_agent(binary, config)
        wait_for(lambda: stats(base)["videos_created"] > before, 30)
        first = time.monotonic() - started
        time.sleep(10)
        rss_now, rss_peak = rss_mib(agent.pid), rss_mib(agent.pid, "VmHWM")
        queued = subprocess.run([binary, "status", "--json", "--config", config], capture_output=True, text=True,
                                env=bench_env())
        summary = json.loads(queued.stdout)["summary"] if queued.returncode == 0 else {}
        stop(agent)
        results.update(first_upload_s=round(first, 2), rss_mib=round(rss_now, 1), peak_rss_mib=round(rss_peak, 1))
        print(f"start with {args.files} files waiting: first upload after {first:.2f} s (target <= 3); "
              f"RSS {rss_now:.1f} MiB, peak {rss_peak:.1f} MiB (target <= 100); queue {summary}")
        print(json.dumps(results))
    finally:
        emulator.terminate()
        emulator.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
