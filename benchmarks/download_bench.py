"""Loopback download: mlib's resumable, hashing fetch against ``curl`` from the same server.

    python benchmarks/download_bench.py [SIZE_MB] [--runs N] [--dir DIR]

Writes a random file of SIZE_MB MiB (default 2048), serves it from 127.0.0.1 (a small threaded
HTTP server that sends the body with ``sendfile``, so the server costs both clients the same
little), then, in alternating rounds after one warm-up round, times:

- ``curl -s -o FILE URL``: download to a file, no hashing (the reference);
- ``reconciler.sources.http.download``: download to a file with sha256 + blake3 computed on the
  way, the size and sha256 checked, the file fsynced and renamed (what ``mlib apply`` does);
- hashlib sha256 of the same bytes from memory (the ceiling the hashing sets on one core).

Prints the medians, GB/s and the ratio mlib / curl (target: >= 0.80). Also measures a resume:
a download cut half-way by the server and finished by a second request, counting the bytes the
second request fetched again (target: at most one chunk). Everything it writes is deleted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

from reconciler.sources.http import Fetch, Retry, client, download

MiB = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    path_to_serve: Path
    cut_at: ClassVar[list[int]] = []  # a one-shot cut (bytes) for the resume measurement
    served: ClassVar[list[int]] = []  # body bytes sent per request

    def do_GET(self) -> None:
        size = self.path_to_serve.stat().st_size
        start = 0
        value = self.headers.get("Range", "")
        status = 200
        if value.startswith("bytes=") and value.endswith("-"):
            start, status = int(value[6:-1]), 206
        length = size - start
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", '"bench"')
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        limit = self.cut_at.pop() if self.cut_at else length
        with open(self.path_to_serve, "rb") as fh:
            sent = 0
            while sent < limit:
                n = os.sendfile(self.wfile.fileno(), fh.fileno(), start + sent, limit - sent)
                if n == 0:
                    break
                sent += n
        self.served.append(sent)
        if limit < length:
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("size_mb", type=int, nargs="?", default=2048)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is not installed")
    work = Path(tempfile.mkdtemp(prefix="mlib-download-bench-", dir=args.dir))
    try:
        run(work, args.size_mb, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, size_mb: int, runs: int) -> None:
    source = work / "served.bin"
    with open(source, "wb") as fh:
        for _ in range(size_mb):
            fh.write(os.urandom(MiB))
    data_sha = _sha256_file(source)
    _Handler.path_to_serve = source
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/served.bin"
    size = size_mb * MiB
    print(f"file: {size_mb} MiB at {url}; cpus: {os.cpu_count()}; load: {os.getloadavg()[0]:.2f}")

    def curl() -> float:
        out = work / "curl.bin"
        t0 = time.perf_counter()
        subprocess.run(["curl", "-s", "-f", "-o", str(out), url], check=True, timeout=600)
        took = time.perf_counter() - t0
        assert out.stat().st_size == size
        out.unlink()
        return took

    def mlib() -> float:
        dest = work / "mlib.bin"
        job = Fetch(url, work / "mlib.part", dest, size, data_sha)
        with client() as http:
            t0 = time.perf_counter()
            got = download(job, http, retry=Retry(attempts=2, sleep=lambda s: None))
            took = time.perf_counter() - t0
        assert got.sha256 == data_sha
        dest.unlink()
        return took

    def sha_only() -> float:
        block = os.urandom(64 * MiB)
        t0 = time.perf_counter()
        h = hashlib.sha256()
        for _ in range(size // len(block)):
            h.update(block)
        return time.perf_counter() - t0

    cases = {"curl -o FILE": curl, "mlib download (hash + verify)": mlib, "sha256 alone": sha_only}
    for fn in cases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, fn in cases.items():
            os.sync()
            times[name].append(fn())
    print(f"{'what':<32}{'median s':>10}{'best s':>9}{'GB/s':>8}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<32}{med:>10.3f}{min(values):>9.3f}{size / med / 1e9:>8.2f}")
    ratio = statistics.median(times["curl -o FILE"]) / statistics.median(
        times["mlib download (hash + verify)"]
    )
    print(f"mlib throughput / curl throughput: {ratio:.2f} (target >= 0.80)")

    # Resume: the server cuts the first response at half the file; the second request resumes.
    _Handler.served.clear()
    _Handler.cut_at[:] = [size // 2]
    dest = work / "resumed.bin"
    job = Fetch(url, work / "resumed.part", dest, size, data_sha)
    with client() as http:
        download(job, http, retry=Retry(attempts=3, sleep=lambda s: None))
    first, second = _Handler.served[0], _Handler.served[1]
    again = first + second - size
    print(f"resume: first request sent {first} bytes, second {second}; fetched again: {again}")
    server.shutdown()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


if __name__ == "__main__":
    main()
