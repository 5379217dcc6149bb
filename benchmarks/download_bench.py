"""Loopback download: mlib's resumable, hashing fetch against ``curl`` from the same server.

    python benchmarks/download_bench.py [SIZE_MB] [--runs N] [--dir DIR] [--json PATH]

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
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.timing import Case, MiB, make_random_file, rounds, sha256_file, summary, write_json
from reconciler.sources.http import Fetch, Retry, client, download

CURL, MLIB, SHA256 = "curl -o FILE", "mlib download (hash + verify)", "sha256 alone (memory)"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Loopback download: mlib against curl")
    parser.add_argument("size_mb", type=int, nargs="?", default=2048)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    if shutil.which("curl") is None:
        raise SystemExit("curl is not installed")
    work = Path(tempfile.mkdtemp(prefix="mlib-download-bench-", dir=args.dir))
    try:
        out = run(work, args.size_mb, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json(args.json, out)
    return 0


def run(work: Path, size_mb: int, runs: int) -> dict[str, Any]:
    source = work / "served.bin"
    size = size_mb * MiB
    make_random_file(source, size)
    data_sha = sha256_file(source)
    _Handler.path_to_serve = source
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return _measure(work, server, size, data_sha, runs)
    finally:
        server.shutdown()
        server.server_close()


def _measure(
    work: Path, server: ThreadingHTTPServer, size: int, data_sha: str, runs: int
) -> dict[str, Any]:
    url = f"http://127.0.0.1:{server.server_address[1]}/served.bin"
    load_before = os.getloadavg()[0]
    print(f"file: {size // MiB} MiB at {url}; cpus: {os.cpu_count()}; load: {load_before:.2f}")
    curl_out, mlib_out = work / "curl.bin", work / "mlib.bin"
    block = os.urandom(64 * MiB)

    def curl() -> None:
        subprocess.run(["curl", "-s", "-f", "-o", str(curl_out), url], check=True, timeout=600)

    def curl_done() -> None:
        assert curl_out.stat().st_size == size
        curl_out.unlink()

    def mlib() -> None:
        job = Fetch(url, work / "mlib.part", mlib_out, size, data_sha)
        with client() as http:
            got = download(job, http, retry=Retry(attempts=2, sleep=lambda s: None))
        assert got.sha256 == data_sha

    def sha_only() -> None:
        h = hashlib.sha256()
        for _ in range(size // len(block)):
            h.update(block)

    cases: list[Case] = [
        (CURL, curl, curl_done),
        (MLIB, mlib, mlib_out.unlink),
        (SHA256, sha_only, None),
    ]
    figures = summary(rounds(cases, runs)[0])
    print(f"{'what':<32}{'median s':>10}{'best s':>9}{'GB/s':>8}")
    for name, f in figures.items():
        med = f["median_s"]
        print(f"{name:<32}{med:>10.3f}{f['best_s']:>9.3f}{size / med / 1e9:>8.2f}")
    ratio = figures[CURL]["median_s"] / figures[MLIB]["median_s"]
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
    return {
        "size_bytes": size,
        "runs": runs,
        "cases": figures,
        "ratio_throughput_vs_curl": ratio,
        "resume_refetched_bytes": again,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


if __name__ == "__main__":
    sys.exit(main())
