#!/usr/bin/env python3
"""Upload benchmark: hotfolder against curl, same emulator, same chunks, loopback only.

Generates a 1 GiB and a 128 MiB file in bench-out/ (not in git), starts `hotfolder emulator`
on 127.0.0.1, then for each file:
  * `hotfolder upload` in 8 MiB chunks: wall time, MB/s and peak RSS (getrusage of the child);
  * the reference: the same token/create/url calls, then curl sending the same 8 MiB chunks
    over one keep-alive connection (`curl ... -T part1 URL --next ... -T part2 URL ...`),
    timed as a whole like hotfolder's run.
Prints the best of --runs runs of each, and the ratio. Needs: cargo, curl, python3.

    python3 bench/upload_bench.py [--runs 3] [--sizes 1024,128] [--keep]
"""

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench-out")
CHUNK = 8 * 1024 * 1024
USER, PASSWORD, VM = "bench", "bench-password", 12345


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate(path, mib):
    if os.path.exists(path) and os.path.getsize(path) == mib * 1024 * 1024:
        return
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as f:
        for i in range(mib):
            # Vary each MiB a little so the content is not periodic.
            f.write(i.to_bytes(8, "little") + block[8:])


def run_measured(cmd, **kw):
    """Runs cmd; returns (seconds, peak RSS in bytes of that child, completed process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    elapsed = time.perf_counter() - start
    # ru_maxrss of RUSAGE_CHILDREN is the max over all waited children: run the measured
    # command through /usr/bin/time when available for a per-process figure.
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(before, after) * 1024, proc


def time_v_rss(stderr):
    for line in stderr.splitlines():
        if "Maximum resident set size" in line:
            return int(line.split(":")[1].strip()) * 1024
    return None


def api(base, method, path, token, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with opener.open(req) as resp:
        return resp.headers["Location"]


def curl_reference(base, parts, total_size):
    """The whole protocol, as hotfolder does it: token, create, upload URL, then the chunks
    with one curl over one keep-alive connection. Timed from the token request on."""
    start = time.perf_counter()
    form = urllib.parse.urlencode(
        {"client_id": "anonymous", "grant_type": "password", "response_type": "token",
         "scope": "openid", "username": USER, "password": PASSWORD}).encode()
    token_url = base + "auth/realms/platform/protocol/openid-connect/token"
    with urllib.request.urlopen(token_url, data=form) as resp:
        token = json.load(resp)["access_token"]
    location = api(base, "POST", f"v1/vms/{VM}/videos", token, {"fileName": "reference.mp4"})
    video_id = location.rstrip("/").rsplit("/", 1)[1]
    upload_url = api(base, "GET", f"v1/vms/{VM}/videos/{video_id}/url", token)
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}\\n"]
    for i, part in enumerate(parts, 1):
        if i > 1:
            cmd += ["--next", "-s", "-o", "/dev/null", "-w", "%{http_code}\\n"]
        cmd += ["-X", "POST", "-H", f"Mi24-Upload-Total-Chunks: {len(parts)}",
                "-H", f"Mi24-Upload-Current-Chunk: {i}",
                "-H", "Content-Type: application/octet-stream", "-H", "Expect:",
                "-T", part, upload_url]
    _, _, proc = run_measured(["/usr/bin/time", "-v"] + cmd)
    secs = time.perf_counter() - start
    codes = proc.stdout.split()
    if proc.returncode != 0 or codes[-1] != "201":
        sys.exit(f"curl reference failed: {proc.returncode} {codes[-3:]} {proc.stderr[-500:]}")
    return secs, total_size / secs / 1e6, video_id


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="1024,128", help="file sizes in MiB")
    parser.add_argument("--keep", action="store_true", help="keep bench-out/ afterwards")
    args = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "hotfolder")
    os.makedirs(OUT, exist_ok=True)

    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    emulator = subprocess.Popen(
        [binary, "emulator", "--listen", f"127.0.0.1:{port}", "--username", USER, "--password", PASSWORD],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        config = os.path.join(OUT, "bench.toml")
        with open(config, "w") as f:
            f.write(f"""[account]
api_url = "{base}v1/vms/"
token_url = "{base}auth/realms/platform/protocol/openid-connect/token"
username = "{USER}"
password_env = "HOTFOLDER_BENCH_PASSWORD"
video_manager_id = {VM}

[upload]
chunk_size = "8 MiB"

[state]
dir = "{OUT}/state"

[log]
dir = "{OUT}/logs"
""")
        env = dict(os.environ, HOTFOLDER_BENCH_PASSWORD=PASSWORD)
        print(f"{'file':>9} {'tool':>9} {'best s':>8} {'MB/s':>8} {'peak RSS':>10}")
        results = {}
        for mib in [int(s) for s in args.sizes.split(",")]:
            path = os.path.join(OUT, f"sample-{mib}MiB.mp4")
            generate(path, mib)
            size = os.path.getsize(path)
            parts_dir = os.path.join(OUT, f"parts-{mib}")
            shutil.rmtree(parts_dir, ignore_errors=True)
            os.makedirs(parts_dir)
            subprocess.run(["split", "-b", str(CHUNK), "-a", "4", "-d", path, parts_dir + "/part"], check=True)
            parts = sorted(os.path.join(parts_dir, p) for p in os.listdir(parts_dir))

            best_h, best_c, rss_h = None, None, 0
            for _ in range(args.runs):
                secs, _, proc = run_measured(
                    ["/usr/bin/time", "-v", binary, "upload", "--config", config, "--json", path], env=env)
                if proc.returncode != 0:
                    sys.exit(f"hotfolder upload failed: {proc.stdout} {proc.stderr[-2000:]}")
                line = json.loads(proc.stdout.splitlines()[0])
                assert line["status"] == "uploaded", line
                rss_h = max(rss_h, time_v_rss(proc.stderr) or 0)
                best_h = secs if best_h is None else min(best_h, secs)
                csecs, _, _ = curl_reference(base, parts, size)
                best_c = csecs if best_c is None else min(best_c, csecs)
            mbs_h, mbs_c = size / best_h / 1e6, size / best_c / 1e6
            print(f"{mib:>6}MiB {'hotfolder':>9} {best_h:>8.2f} {mbs_h:>8.0f} {rss_h / 2**20:>7.1f}MiB")
            print(f"{mib:>6}MiB {'curl':>9} {best_c:>8.2f} {mbs_c:>8.0f}")
            print(f"{mib:>6}MiB {'ratio':>9} {mbs_h / mbs_c:>8.2f}  (hotfolder / curl; target >= 0.90)")
            results[mib] = (mbs_h, mbs_c, rss_h)
            shutil.rmtree(parts_dir, ignore_errors=True)
        print(json.dumps({f"{k}MiB": {"hotfolder_MBps": round(v[0]), "curl_MBps": round(v[1]),
                                      "ratio": round(v[0] / v[1], 3), "peak_rss_MiB": round(v[2] / 2**20, 1)}
                          for k, v in results.items()}))
    finally:
        emulator.terminate()
        emulator.wait()
        if not args.keep:
            shutil.rmtree(OUT, ignore_errors=True)


if __name__ == "__main__":
    main()
