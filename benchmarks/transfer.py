"""Big files through the API: a 1 GiB upload and download against `cp` of the same file on the same disk.

Starts `distill api` (no worker) with its DISTILL_HOME in a temporary folder (under `--dir`), makes there
a file of `--size-mib` (a safetensors teacher whose one tensor is random bytes) and, `--repeats` times,
times: `cp` of it into that folder; its upload with `curl -F` (streamed from the file) to a server that
only reads the body and throws it away (the most any server gets from this client over loopback here),
and to uvicorn, run as `distill api` runs it, serving an ASGI app that does the same (the most an ASGI
app gets from this server); its upload to the API; its download with `curl -o` into that folder from a
server that sends the file with `sendfile` (the most any server gets this client to write here), then
from the API, checking the sha256 of the bytes. Before each timed step all dirty pages are synced to disk
(untimed), so that no step pays for an earlier one's writeback; a first round, not counted, warms the page
cache (on a VM whose memory is mapped in as it is first touched, the first writes to new pages are several
times slower). Throughputs are medians, in MiB/s, each printed against its goal (GOALS: the API's download
and upload as a share of `cp`, and its peak RSS growth). The API process is watched through
/proc/<pid>: its VmRSS polled every 10 ms during each transfer (the peak over the value before it), its
VmHWM before the first transfer and after the last, and its CPU seconds per GiB moved.

With `--s3` the same steps run again with the API's storage in a bucket (DISTILL_STORAGE_URL=s3://…) on
moto's S3 server, started here on loopback, and the S3 throughputs are compared with the disk's. moto keeps
objects in memory and is plain Python: it is the bound there, not a real S3's speed.

    .venv/bin/python -m benchmarks.transfer [--size-mib 1024] [--repeats 3] [--dir /var/tmp] [--s3]
"""

import hashlib
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from benchmarks.common import ROOT, argument_parser, machine, write_result
from tests.servers import s3_bucket, s3_server
from tests.stack import free_port

MiB = 1024 * 1024
BLOCK = 64 * MiB
GOAL_RATIOS = {"download": 1.0, "upload": 0.5}  # of cp's throughput
GOAL_RSS_MIB = 64  # the API's peak RSS growth during a transfer


def make_teacher(path: Path, size: int) -> str:
    """A `size`-byte safetensors file of one uint8 tensor of random bytes; its sha256."""
    header = _header(size)  # as long as the real one or longer: the tensor has fewer bytes than the file
    data = size - 8 - len(header)
    header = _header(data).ljust(len(header))  # safetensors allows a header padded with spaces
    digest = hashlib.sha256()
    with path.open("wb") as out:
        block = struct.pack("<Q", len(header)) + header
        while block:
            digest.update(block)
            out.write(block)
            block = os.urandom(min(BLOCK, data))
            data -= len(block)
    return digest.hexdigest()


def _header(tensor_bytes: int) -> bytes:
    tensor = {"dtype": "U8", "shape": [tensor_bytes], "data_offsets": [0, tensor_bytes]}
    return json.dumps({"weights": tensor}).encode()


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --- the servers --------------------------------------------------------------------------------------


@contextmanager
def api_process(home: Path, max_upload_bytes: int, storage_url: str | None):
    """`distill api` on a free port, its home in `home` (and its storage, unless `storage_url`); yields
    (url, pid)."""
    env = {**os.environ, "DISTILL_HOME": str(home), "DISTILL_MAX_UPLOAD_BYTES": str(max_upload_bytes)}
    env |= {"DISTILL_STORAGE_URL": storage_url} if storage_url else {}
    run = [sys.executable, "-m", "cli"]
    subprocess.run([*run, "migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
    port = free_port()
    with (home / "api.log").open("w") as log:
        api = subprocess.Popen([*run, "api", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or api.poll() is not None:
                    raise RuntimeError((home / "api.log").read_text()) from None
                time.sleep(0.2)
        yield url, api.pid
    finally:
        api.terminate()
        api.wait(timeout=30)


@contextmanager
def reference_server(source: Path):
    """An HTTP server (a thread of this process) that answers, over and over, a POST by reading its body
    into one buffer (201), and a GET with the bytes of `source`, sent by `sendfile`; yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                _answer(connection, source)

    server = threading.Thread(target=serve)
    server.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        server.join()
        listener.close()


def _answer(connection: socket.socket, source: Path) -> None:
    connection.settimeout(None)
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    head, body = received.split(b"\r\n\r\n", 1)
    if head.startswith(b"GET "):
        _send_file(connection, source)
        return
    headers = dict(line.lower().split(b":", 1) for line in head.split(b"\r\n")[1:])
    if headers.get(b"expect", b"").strip() == b"100-continue":  # curl asks before a big body
        connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    left, buffer = int(headers[b"content-length"]) - len(body), bytearray(MiB)
    while left > 0 and (received_bytes := connection.recv_into(buffer)):
        left -= received_bytes
    connection.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")


def _send_file(connection: socket.socket, source: Path) -> None:
    size = source.stat().st_size
    connection.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode())
    with source.open("rb") as file:
        sent = 0
        while sent < size:
            sent += os.sendfile(connection.fileno(), file.fileno(), sent, size - sent)


@contextmanager
def draining_uvicorn():
    """uvicorn as `distill api` runs it (a thread of this process), serving an ASGI app that reads each
    request's body and throws it away; yields its URL."""
    server = uvicorn.Server(uvicorn.Config(_drain, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join()


async def _drain(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 201, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


# --- what /proc says of the API process ------------------------------------------------------------


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@contextmanager
def watched(pid: int):
    """Polls the process's VmRSS every 10 ms while the block runs; yields a dict that then holds the peak
    growth (MiB) over the value before and the CPU seconds the process spent."""
    figures, stop = {}, threading.Event()
    before, peak, cpu = status_kib(pid, "VmRSS"), [0], cpu_seconds(pid)

    def poll():
        while not stop.wait(0.01):
            peak[0] = max(peak[0], status_kib(pid, "VmRSS"))

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        yield figures
    finally:
        stop.set()
        poller.join()
        peak[0] = max(peak[0], status_kib(pid, "VmRSS"))
        figures["rss_growth_mib"] = max(0, peak[0] - before) / 1024
        figures["cpu_seconds"] = cpu_seconds(pid) - cpu


# --- the steps ----------------------------------------------------------------------------------------


def timed(command: list[str]) -> tuple[float, str]:
    """Seconds `command` took (after a sync, untimed), and what it printed."""
    subprocess.run(["sync"], check=True)
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, done.stdout


def copy(source: Path, folder: Path) -> dict:
    target = folder / "copy"
    seconds, _ = timed(["cp", str(source), str(target)])
    target.unlink()
    return {"seconds": seconds}


def curl_upload(url: str, source: Path) -> tuple[float, str]:
    """Seconds and the answer's body of a `curl -F` upload; raises unless it is a 201."""
    form = ["-F", f"file=@{source}", "-F", "purpose=teacher"]
    seconds, out = timed(["curl", "-sS", "-w", "\n%{http_code}", *form, f"{url}/v1/files"])
    body, status = out.rsplit("\n", 1)
    if status != "201":
        raise RuntimeError(f"upload answered {status}: {body}")
    return seconds, body


def curl_download(url: str, folder: Path, sha256: str) -> float:
    """Seconds of a `curl -o` download into `folder`; raises unless it is a 200 of the bytes of `sha256`."""
    target = folder / "download"
    seconds, status = timed(["curl", "-sS", "-w", "%{http_code}", "-o", str(target), url])
    if status != "200" or sha256_of(target) != sha256:
        raise RuntimeError(f"{url} answered {status}, or other bytes than were uploaded")
    target.unlink()
    return seconds


def upload(url: str, pid: int, source: Path, size: int, sha256: str) -> tuple[dict, dict]:
    with watched(pid) as figures:
        seconds, body = curl_upload(url, source)
    file = json.loads(body)
    if (file["bytes"], file["sha256"]) != (size, sha256):
        raise RuntimeError(f"the service stored other bytes: {file}")
    return {"seconds": seconds, **figures}, file


def download(url: str, pid: int, file: dict, folder: Path) -> dict:
    with watched(pid) as figures:
        seconds = curl_download(f"{url}/v1/files/{file['id']}/content", folder, file["sha256"])
    return {"seconds": seconds, **figures}


def measure(folder: Path, source: Path, sha256: str, repeats: int, storage_url: str | None = None) -> dict:
    size = source.stat().st_size
    folder.mkdir()
    runs: dict[str, list] = {name: [] for name in ROWS}
    with (
        api_process(folder / "home", 2 * size, storage_url) as (url, pid),
        reference_server(source) as reference,
        draining_uvicorn() as drain,
    ):
        with source.open("rb") as f:  # the upload path, warmed: a 422 for a cut-off teacher
            warm = httpx.post(
                f"{url}/v1/files", files={"file": ("t", f.read(1000))}, data={"purpose": "teacher"}
            )
        assert warm.status_code == 422, warm.text
        hwm_before = status_kib(pid, "VmHWM")
        for repeat in range(repeats + 1):  # the first round is not counted: it warms the page cache
            measured = {
                "cp": copy(source, folder),
                "discarded": {"seconds": curl_upload(reference, source)[0]},
                "uvicorn_discarded": {"seconds": curl_upload(drain, source)[0]},
            }
            measured["upload"], file = upload(url, pid, source, size, sha256)
            measured["sendfile"] = {"seconds": curl_download(f"{reference}/", folder, sha256)}
            measured["download"] = download(url, pid, file, folder)
            httpx.delete(f"{url}/v1/files/{file['id']}").raise_for_status()
            for name, figures in measured.items():
                runs[name] += [figures] if repeat else []
        hwm_growth = (status_kib(pid, "VmHWM") - hwm_before) / 1024
    return summary(runs, size, hwm_growth)


def summary(runs: dict, size: int, hwm_growth: float) -> dict:
    result = {
        "size_bytes": size,
        "repeats": len(runs["cp"]),
        "api_vmhwm_growth_mib": round(hwm_growth, 1),
        "goal_rss_growth_mib": GOAL_RSS_MIB,
    }
    for name, measured in runs.items():
        speeds = [size / MiB / run["seconds"] for run in measured]
        result[name] = {
            "mib_per_s": round(statistics.median(speeds)),
            "runs_mib_per_s": [round(s) for s in speeds],
        }
        if name != "cp":
            result[name]["ratio_to_cp"] = _ratio(result, name, "cp")
    for name, goal in GOAL_RATIOS.items():
        cpu_seconds = statistics.median(run["cpu_seconds"] for run in runs[name])
        result[name] |= {
            "goal_ratio_to_cp": goal,
            "api_rss_growth_mib": round(max(run["rss_growth_mib"] for run in runs[name]), 1),
            "api_cpu_seconds_per_gib": round(cpu_seconds / (size / 1024**3), 2),
        }
    result["upload"]["ratio_to_discarded"] = _ratio(result, "upload", "discarded")
    result["upload"]["ratio_to_uvicorn_discarded"] = _ratio(result, "upload", "uvicorn_discarded")
    result["download"]["ratio_to_sendfile"] = _ratio(result, "download", "sendfile")
    return result


def _ratio(result: dict, name: str, reference: str) -> float:
    return round(result[name]["mib_per_s"] / result[reference]["mib_per_s"], 2)


ROWS = {
    "cp": "cp",
    "discarded": "curl -F, body discarded",
    "uvicorn_discarded": "curl -F, uvicorn discards",
    "upload": "upload (curl -F)",
    "sendfile": "curl -o from sendfile",
    "download": "download (curl -o)",
}
# What each of the API's transfers is also compared with: the most this server, or this client, allows.
CEILINGS = {"upload": ("uvicorn_discarded", "uvicorn discarding"), "download": ("sendfile", "sendfile")}


def report(result: dict) -> None:
    print(f"{result['size_bytes'] / MiB:.0f} MiB, medians of {result['repeats']} runs (each run in brackets)")
    for name, label in ROWS.items():
        figures = result[name]
        line = f"{label:<26} {figures['mib_per_s']:>5} MiB/s {str(figures['runs_mib_per_s']):<18}"
        if name != "cp":
            line += f" {figures['ratio_to_cp']:.2f} of cp"
        if name in GOAL_RATIOS:
            line += f", API CPU {figures['api_cpu_seconds_per_gib']} s/GiB"
        print(line)
    print(f"goals (the API's VmHWM grew +{result['api_vmhwm_growth_mib']} MiB over all transfers):")
    for name, goal in GOAL_RATIOS.items():
        figures, (ceiling, ceiling_label) = result[name], CEILINGS[name]
        ratio, growth = figures["ratio_to_cp"], figures["api_rss_growth_mib"]
        print(
            f"  {name} >= {goal}x cp: {ratio:.2f}x {_verdict(ratio >= goal)} "
            f"({figures[f'ratio_to_{ceiling}']:.2f} of {ceiling_label}); "
            f"API peak RSS growth < {GOAL_RSS_MIB} MiB: +{growth:.1f} MiB {_verdict(growth < GOAL_RSS_MIB)}"
        )


def _verdict(met: bool) -> str:
    return "pass" if met else "MISS"


def measure_s3(folder: Path, source: Path, sha256: str, repeats: int) -> dict:
    """`measure` with the API's storage in a new bucket on moto's S3 server."""
    with s3_server(), s3_bucket() as bucket:
        return measure(folder, source, sha256, repeats, storage_url=f"s3://{bucket}/transfer")


def report_s3(disk: dict, s3: dict) -> None:
    print("\non S3 (moto's server on loopback):")
    report(s3)
    for name in ("upload", "download"):
        ratio = s3[name]["mib_per_s"] / disk[name]["mib_per_s"]
        print(f"S3 / disk, {name}: {s3[name]['mib_per_s']} / {disk[name]['mib_per_s']} MiB/s = {ratio:.2f}")


def main() -> None:
    parser = argument_parser(__doc__, "transfer")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where the file and the API's storage go")
    parser.add_argument("--s3", action="store_true", help="also with the storage on moto's S3 server")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        sys.exit("this benchmark needs curl")
    with tempfile.TemporaryDirectory(prefix="distill-transfer-", dir=args.dir) as folder:
        source = Path(folder) / "teacher.safetensors"
        sha256 = make_teacher(source, args.size_mib * MiB)
        result = measure(Path(folder) / "disk", source, sha256, args.repeats)
        s3 = measure_s3(Path(folder) / "s3", source, sha256, args.repeats) if args.s3 else None
    report(result)
    if s3 is not None:
        report_s3(result, s3)
        result["s3"] = s3
    write_result(args.out, {"benchmark": "transfer", "machine": machine(), **result})


if __name__ == "__main__":
    main()
