#!/usr/bin/env python3
"""RSS of the service under bad input (issue 11): starts the release binary on a fresh SQLite
store, sends rounds of bad requests (large and malformed bodies, bad signatures, stalled
bodies), and prints the resident set size after each round, so that growth that stops (the
allocator keeping freed memory) can be told from growth that does not (a leak).

    cargo build --release
    python3 bench/rss_bad_input.py [--bin target/release/messenger-handover] [--rounds 5]
        [--per-round 2000] [--stalled 500] [--pause 1] [--env MALLOC_ARENA_MAX=2]

Only the standard library; nothing is asserted (timing and memory are for bench/, not tests).
"""

import argparse
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

SECRET = "bench-app-secret"
TOKEN = "bench-fulfillment-token-0123456789"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def request(port, raw, read=True):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(raw)
        if read:
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
    except OSError:
        pass
    finally:
        s.close()


def post(path, body, headers=()):
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
    head += f"Content-Length: {len(body)}\r\n"
    for h in headers:
        head += h + "\r\n"
    return head.encode() + b"\r\n" + body


def signed(body):
    sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return f"X-Hub-Signature-256: sha256={sig}"


def catalogue():
    """Bad requests, a few of each kind; the large ones are what an allocator keeps."""
    big_text = "x" * 900_000
    psid = "1534862223272449"
    page = "958823367603818"
    auth = [f"Authorization: Bearer {TOKEN}", "Content-Type: application/json"]
    big_event = json.dumps({"object": "page", "entry": [{"id": page, "time": 1, "standby": [
        {"sender": {"id": psid}, "recipient": {"id": page}, "timestamp": 1,
         "message": {"mid": "m_" + "a" * 500_000, "text": big_text}}]}]}).encode()
    big_fulfillment = json.dumps({
        "session": "projects/p/agent/sessions/" + "s" * 500_000,
        "queryResult": {"action": "input.handover", "queryText": big_text}}).encode()
    yield post("/messenger", b"{not json", [signed(b"{not json")])
    yield post("/messenger", big_event, ["X-Hub-Signature-256: sha256=00"])
    yield post("/messenger", big_event, [signed(big_event)])
    yield post("/fulfillment", big_fulfillment, auth)
    yield post("/fulfillment", b"[" * 100_000, auth)
    yield post("/fulfillment", b"x" * 2_000_000, auth)
    yield post("/fulfillment", b"{}", ["Content-Type: text/plain", f"Authorization: Bearer {TOKEN}"])
    yield b"GET /fulfillment HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/messenger-handover")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=2000)
    ap.add_argument("--stalled", type=int, default=500,
                    help="connections per round that send half a body and stop")
    ap.add_argument("--pause", type=float, default=1.0,
                    help="seconds between rounds (the service closes stalled bodies meanwhile)")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the service")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PORT": str(port), "HOST": "127.0.0.1",
        "DATABASE_URL": f"sqlite://{tmp}/h.db",
        "FB_APP_ID": "111111111111111", "FB_APP_SECRET": SECRET,
        "FB_PAGE_ACCESS_TOKEN": "EAAbenchpagetoken", "FB_VERIFY_TOKEN": "bench-verify-token",
        "FULFILLMENT_TOKEN": TOKEN, "GRAPH_API_BASE": "http://127.0.0.1:9", "RUST_LOG": "warn",
    }
    for kv in args.env:
        k, v = kv.split("=", 1)
        env[k] = v
    svc = subprocess.Popen([args.bin, "serve"], env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        print(f"start: RSS {rss_kib(svc.pid) / 1024:.1f} MiB, {fds(svc.pid)} fds", flush=True)
        kinds = list(catalogue())
        for r in range(1, args.rounds + 1):
            for i in range(args.per_round):
                request(port, kinds[i % len(kinds)])
            stalled, waiting = [], 0
            for i in range(args.stalled):
                try:
                    # Beyond MAX_CONNECTIONS and the listen queue, a connect waits: not counted.
                    c = socket.create_connection(("127.0.0.1", port), timeout=1)
                    c.sendall(post("/messenger", b"{" * 100)[:-50])
                    stalled.append(c)
                except OSError:
                    waiting += 1
            time.sleep(0.5)
            peak = rss_kib(svc.pid)
            open_fds = fds(svc.pid)
            if waiting:
                print(f"  {waiting} connections could not connect within 1 s", flush=True)
            for c in stalled:
                c.close()
            time.sleep(args.pause)
            print(f"round {r}: {args.per_round} bad requests, {args.stalled} stalled bodies; "
                  f"RSS {peak / 1024:.1f} MiB with them open ({open_fds} fds), "
                  f"{rss_kib(svc.pid) / 1024:.1f} MiB after", flush=True)
    finally:
        svc.terminate()
        svc.wait()


if __name__ == "__main__":
    sys.exit(main())
