#!/usr/bin/env python3
"""Agent benchmark: detection latency, idle CPU while watching 10,000 files, the same idle with
the HTTP listener and a webhook destination configured (CPU and RSS beside the run without
them, /metrics scraped every 15 s as Prometheus would), the webhook's delivery delay to a
healthy receiver, and a start with 10,000 files already waiting. Loopback only: `hotfolder
emulator` on 127.0.0.1, the webhook receiver a Python http.server in this process.

    python3 bench/agent_bench.py [--files 10000] [--idle-seconds 60] [--deliveries 5]

Targets: latency <= stable_for + 1 s; idle CPU < 1 s per minute with 10,000 files
watched; first upload within 3 s of starting with 10,000 files waiting; RSS <= 100 MiB.
"""

import argparse
import http.server
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

from harness import account_toml, bench_env, build_release, free_port, process_cpu, start_emulator, write_mp4


def stats(base):
    with urllib.request.urlopen(base + "_emulator/stats") as resp:
        return json.load(resp)


def rss_mib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def write_config(work, base, inbox, stable_for, extra_upload="", extra=""):
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
{extra}""")
    return path


def listener_and_webhook_toml(http_port, hook_url):
    """The [http] listener and one webhook destination that wants `uploaded` events."""
    return f"""
[http]
listen = "127.0.0.1:{http_port}"

[[notify]]
url = "{hook_url}"
events = ["uploaded"]
"""


class HookReceiver:
    """A webhook receiver on 127.0.0.1 (a thread of this process): answers every POST 200 at
    once and records when it arrived (time.monotonic(), the clock the bench measures with) and
    its JSON body."""

    def __init__(self):
        self.arrivals = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                arrived = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                try:
                    event = json.loads(body)
                except ValueError:
                    event = {"unparsed": body.decode(errors="replace")}
                with receiver.lock:
                    receiver.arrivals.append((arrived, event))

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def uploaded(self):
        """The `uploaded` events so far: [(arrival, event)]."""
        with self.lock:
            return [(t, e) for t, e in self.arrivals if e.get("event") == "uploaded"]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def http_get(url):
    """GET `url`: (status, body bytes), or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return None


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


def wait_for_moved(path, limit):
    """Polls every 1 ms for `path` (a file's place in done/); time.monotonic() when it is
    there, or None after `limit` seconds."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if os.path.exists(path):
            return time.monotonic()
        time.sleep(0.001)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--deliveries", type=int, default=5, help="files dropped for the webhook delay")
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
        idle_rss, idle_peak = rss_mib(agent.pid), rss_mib(agent.pid, "VmHWM")
        stop(agent)
        per_minute = idle_cpu * 60 / args.idle_seconds
        results["idle_cpu_s_per_minute"] = round(per_minute, 3)
        results.update(idle_rss_mib=round(idle_rss, 1), idle_peak_rss_mib=round(idle_peak, 1))
        print(f"idle CPU watching {args.files} files: {idle_cpu:.2f} s over {args.idle_seconds:.0f} s = {per_minute:.2f} s/min (target < 1)")
        print(f"  RSS at the end of the idle window: {idle_rss:.1f} MiB (peak {idle_peak:.1f} MiB)")

        # 2b. The same idle, with the HTTP listener and one webhook destination (the outbox and
        # its delivery task) configured; /metrics is scraped every 15 s, as Prometheus would.
        receiver = HookReceiver()
        http_port = free_port()
        shutil.rmtree(os.path.join(work, "state"), ignore_errors=True)
        config = write_config(work, base, idle_dir, "10s",
                              extra=listener_and_webhook_toml(http_port, receiver.url))
        started = time.monotonic()
        agent = start_agent(binary, config)
        listener = f"http://127.0.0.1:{http_port}/"
        if not wait_for(lambda: http_get(listener + "healthz"), 10):
            print("  the listener did not answer within 10 s")
        time.sleep(max(0.0, started + 5 - time.monotonic()))  # as the run without it
        cpu_start = process_cpu(agent.pid)
        window_start = time.monotonic()
        tries, scrapes, scrape_bytes = 0, 0, 0
        while time.monotonic() - window_start < args.idle_seconds:
            answer = http_get(listener + "metrics")
            tries += 1
            if answer and answer[0] == 200:
                scrapes += 1
                scrape_bytes = len(answer[1])
            next_scrape = window_start + 15 * tries
            time.sleep(max(0.0, min(next_scrape, window_start + args.idle_seconds) - time.monotonic()))
        listened_cpu = process_cpu(agent.pid) - cpu_start
        listened_rss, listened_peak = rss_mib(agent.pid), rss_mib(agent.pid, "VmHWM")
        stop(agent)
        listened_per_minute = listened_cpu * 60 / args.idle_seconds
        results.update(idle_with_listener_cpu_s_per_minute=round(listened_per_minute, 3),
                       idle_with_listener_rss_mib=round(listened_rss, 1),
                       idle_with_listener_peak_rss_mib=round(listened_peak, 1),
                       metrics_scrapes=scrapes)
        print(f"idle CPU with [http] listen and one [[notify]] webhook, watching {args.files} files: "
              f"{listened_cpu:.2f} s over {args.idle_seconds:.0f} s = {listened_per_minute:.2f} s/min "
              f"(without them {per_minute:.2f}); {scrapes} of {tries} GET /metrics answered 200 "
              f"({scrape_bytes} B), {len(receiver.arrivals)} POSTs (nothing to notify)")
        print(f"  RSS at the end of the idle window: {listened_rss:.1f} MiB (peak {listened_peak:.1f} MiB; "
              f"without them {idle_rss:.1f}, peak {idle_peak:.1f})")

        # 2c. Delivery delay to a healthy receiver: from the file's move into done/ (polled
        # every 1 ms) to the arrival of its `uploaded` POST.
        hooked = os.path.join(work, "hooked")
        done = os.path.join(hooked, "done")
        os.makedirs(hooked)
        shutil.rmtree(os.path.join(work, "state"), ignore_errors=True)
        config = write_config(work, base, hooked, "1s",
                              extra=listener_and_webhook_toml(free_port(), receiver.url))
        agent = start_agent(binary, config)
        time.sleep(1.0)
        delays = []
        for i in range(args.deliveries):
            before = len(receiver.uploaded())
            name = f"hooked{i}.mp4"
            write_mp4(os.path.join(hooked, name), 1024 * 1024)
            moved = wait_for_moved(os.path.join(done, name), 30)
            arrived = wait_for(lambda: len(receiver.uploaded()) > before and receiver.uploaded()[before], 30)
            if moved is None or not arrived:
                print(f"  {name}: moved {moved is not None}, POST arrived {bool(arrived)}; not counted")
                continue
            delays.append(arrived[0] - moved)
        stop(agent)
        receiver.close()
        if delays:
            median, worst = statistics.median(delays), max(delays)
            results.update(webhook_delay_ms=[round(d * 1000, 1) for d in delays],
                           webhook_delay_median_ms=round(median * 1000, 1),
                           webhook_delay_max_ms=round(worst * 1000, 1))
            print(f"webhook delivery delay, move into done/ -> `uploaded` POST at the receiver "
                  f"({len(delays)} files): median {median * 1000:.1f} ms, max {worst * 1000:.1f} ms "
                  f"({', '.join(f'{d * 1000:.1f}' for d in delays)} ms)")

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
