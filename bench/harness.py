"""What the benchmarks need: the release binary, the emulator on a free loopback port, the
config's [account] table for it, a free port for other listeners, a process's CPU seconds, and
sample exports (valid MP4 files, since the agent checks that a container is whole before it
queues a file). Imported by upload_bench.py, link_bench.py and agent_bench.py (run them from
anywhere: Python puts their folder on the import path)."""

import os
import socket
import struct
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER, PASSWORD, VM = "bench", "bench-password", 12345
# The benchmarks' configs read the password from this variable.
PASSWORD_ENV = "HOTFOLDER_BENCH_PASSWORD"


def build_release():
    """Builds the release binary and returns its path (in $CARGO_TARGET_DIR when set)."""
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return os.path.join(target, "release", "hotfolder")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_emulator(binary, *flags):
    """Starts `hotfolder emulator` (with `flags`, e.g. "--sink") on a free 127.0.0.1 port;
    returns (process, base URL) once it accepts connections (or after 10 s, when the first
    request will say what is wrong)."""
    port = free_port()
    emulator = subprocess.Popen(
        [binary, "emulator", "--listen", f"127.0.0.1:{port}", "--username", USER, "--password", PASSWORD,
         *flags],
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


def _box(kind, body):
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _mp4_structure(size):
    """What surrounds the payload of an MP4 of exactly `size` bytes: `ftyp` and the `mdat`
    header before it, a minimal `moov` (a movie header) after it; and the payload's length."""
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 0) + b"isom")
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    mvhd = (struct.pack(">I", 0) + bytes(8) + struct.pack(">IIIH", 1000, 0, 0x10000, 0x100)
            + bytes(10) + matrix + bytes(24) + struct.pack(">I", 2))
    moov = _box(b"moov", _box(b"mvhd", mvhd))
    payload = size - len(ftyp) - 8 - len(moov)
    if payload < 0:
        raise ValueError(f"an MP4 needs at least {size - payload} bytes, not {size}")
    if payload + 8 <= 0xFFFFFFFF:
        mdat = struct.pack(">I4s", payload + 8, b"mdat")
    else:
        # A 64-bit size takes 8 more bytes of the header, from the payload.
        payload -= 8
        mdat = struct.pack(">I4sQ", 1, b"mdat", payload + 16)
    return ftyp + mdat, payload, moov


def mp4_pieces(size, piece=1024 * 1024):
    """The bytes of a valid MP4 export of exactly `size` bytes, about `piece` at a time: the
    header, a random payload (each piece marked with its number, so it is not periodic), and
    the index (`moov`) last, so the file is whole only once the last piece is written."""
    head, payload, tail = _mp4_structure(size)
    block = os.urandom(piece)
    yield head
    number, left = 0, payload
    while left > 0:
        n = min(piece, left)
        yield (number.to_bytes(8, "little") + block[8:])[:n]
        number += 1
        left -= n
    yield tail


def write_mp4(path, size, pause=0.0, piece=1024 * 1024):
    """Writes a valid MP4 export of exactly `size` bytes to `path`, flushing after each piece
    and sleeping `pause` seconds between pieces (a render in progress)."""
    with open(path, "wb") as f:
        for i, part in enumerate(mp4_pieces(size, piece)):
            if i > 0 and pause:
                time.sleep(pause)
            f.write(part)
            f.flush()
