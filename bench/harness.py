"""What both benchmarks need: the release binary, the emulator on a free loopback port, the
config's [account] table for it, and a process's CPU seconds. Imported by upload_bench.py and
agent_bench.py (run them from anywhere: Python puts their folder on the import path)."""

import os
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER, PASSWORD, VM = "bench", "bench-password", 12345
# The benchmarks' configs read the password from this variable.
PASSWORD_ENV = "HOTFOLDER_BENCH_PASSWORD"


def build_release():
    """Builds the release binary and returns its path."""
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release", "hotfolder")


def start_emulator(binary):
    """Starts `hotfolder emulator` on a free 127.0.0.1 port; returns (process, base URL) once
    it accepts connections (or after 10 s, when the first request will say what is wrong)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    emulator = subprocess.Popen(
        [binary, "emulator", "--listen", f"127.0.0.1:{port}", "--username", USER, "--password", PASSWORD],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return emulator, f"http://127.0.0.1:{port}/"


def account_toml(base):
    """The [account] table for the emulator at `base`."""
    return f"""[account]
api_url = "{base}v1/vms/"
token_url = "{base}auth/realms/platform/protocol/openid-connect/token"
username = "{USER}"
password_env = "{PASSWORD_ENV}"
video_manager_id = {VM}
"""


def bench_env():
    """The environment for hotfolder processes: the password where the config says it is."""
    return dict(os.environ, **{PASSWORD_ENV: PASSWORD})


def process_cpu(pid):
    """CPU seconds a running process has used so far (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
