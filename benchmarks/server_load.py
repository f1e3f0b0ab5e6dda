"""Server load: 200 concurrent signed webhook posts on loopback; none lost, none doubled.

    .venv/bin/python benchmarks/server_load.py [--posts 200] [--repeat 3]

The server (``flux.server.create_app`` with its worker, SQLite storage) runs under uvicorn in
a subprocess; this process posts ``--posts`` distinct deliveries at once with httpx, then
posts them all again (redeliveries). Printed, each the median of ``--repeat`` rounds:

- accepted/s and p50/p99 latency of the first posts (answered 201 with a run);
- runs/s end to end: from the first post until every run completed (checked through the API);
- the baseline: the same runs started in-process with ``engine.start`` (with an idempotency
  key each, as the webhook does) and driven by a worker on the same kind of storage, and the
  ratio of the two rates: what HTTP, signatures and JSON cost on top;
- lost and doubled runs (must be 0: every delivery has exactly one run, every redelivery got
  the same run back with 200).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from flux import FluxEngine, create_workflow
from flux.server import Webhook, create_app, webhook_signature
from flux.storage import SQLiteStorage

SECRET = "bench-secret"
workflow = create_workflow("load").step("record", lambda ctx: ctx.input["n"])


def app_for(path: str) -> Any:
    engine = FluxEngine(storage=SQLiteStorage(path), poll_interval=0.05)
    return create_app(engine, webhooks=[Webhook("load", workflow, secret=SECRET)])


def serve(fd: int, db: str) -> None:
    import uvicorn

    uvicorn.run(app_for(db), fd=fd, log_level="warning")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def post_all(http: httpx.AsyncClient, bodies: list[bytes]) -> list[tuple[int, str, float]]:
    async def post(body: bytes) -> tuple[int, str, float]:
        headers = {"content-type": "application/json", "X-Flux-Signature": webhook_signature(SECRET, body)}
        began = time.perf_counter()
        response = await http.post("/hooks/load", content=body, headers=headers)
        elapsed = time.perf_counter() - began
        return response.status_code, response.json().get("id", ""), elapsed

    return list(await asyncio.gather(*(post(body) for body in bodies)))


async def all_completed(http: httpx.AsyncClient, expected: int) -> list[dict[str, Any]]:
    while True:
        page = (await http.get("/api/runs", params={"workflow": "load", "limit": 500})).json()["runs"]
        if len(page) >= expected and all(run["status"] == "completed" for run in page):
            return list(page)
        await asyncio.sleep(0.02)


def http_round(posts: int, folder: Path) -> dict[str, float]:
    """Start the server in a subprocess on a pre-bound socket, load it, stop it."""
    db = str(folder / f"http-{time.monotonic_ns()}.db")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(sock.fileno()), db],
        pass_fds=[sock.fileno()],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    try:
        return asyncio.run(load(f"http://127.0.0.1:{sock.getsockname()[1]}", posts))
    finally:
        server.terminate()
        server.wait(timeout=60)
        sock.close()


async def load(base_url: str, posts: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=posts, max_keepalive_connections=posts)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as http:
        await http.get("/api/workflows")  # the server is up (startup is not measured)
        bodies = [json.dumps({"n": n}).encode() for n in range(posts)]
        began = time.perf_counter()
        first = await post_all(http, bodies)
        accepted = time.perf_counter() - began
        runs = await all_completed(http, posts)
        finished = time.perf_counter() - began
        again = await post_all(http, bodies)
    ids = [run_id for _, run_id, _ in first]
    lost = sum(1 for status, _, _ in first if status != 201) + max(0, posts - len(runs))
    doubled = (len(runs) - len({run["id"] for run in runs})) + max(0, len(runs) - posts)
    redelivered_wrong = sum(
        1
        for (status, run_id, _), original in zip(again, ids, strict=True)
        if status != 200 or run_id != original
    )
    latencies = [elapsed for _, _, elapsed in first]
    return {
        "accepted_per_s": posts / accepted,
        "runs_per_s": posts / finished,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "lost": lost,
        "doubled": doubled + redelivered_wrong,
    }


async def baseline_round(posts: int, folder: Path) -> float:
    async with (
        FluxEngine(
            storage=SQLiteStorage(folder / f"base-{time.monotonic_ns()}.db"), poll_interval=0.05
        ) as engine,
        engine.worker(),
    ):
        began = time.perf_counter()
        ids = await asyncio.gather(
            *(engine.start(workflow, {"n": n}, idempotency_key=f"delivery-{n}") for n in range(posts))
        )
        await asyncio.gather(*(engine.wait_result(run_id) for run_id in ids))
        return posts / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
        return
    rounds: list[dict[str, float]] = []
    baselines: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeat):
            rounds.append(http_round(args.posts, Path(folder)))
            baselines.append(asyncio.run(baseline_round(args.posts, Path(folder))))

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    base = statistics.median(baselines)
    print(f"{args.posts} concurrent webhook posts on loopback, median of {args.repeat} rounds")
    print(
        f"  accepted:          {median('accepted_per_s'):8.1f} posts/s   p50 {median('p50_ms'):.1f} ms   "
        f"p99 {median('p99_ms'):.1f} ms"
    )
    print(f"  end to end:        {median('runs_per_s'):8.1f} runs/s (post -> completed)")
    print(f"  in-process start:  {base:8.1f} runs/s (baseline: engine.start with a key + worker, no HTTP)")
    print(f"  ratio HTTP/in-process: {median('runs_per_s') / base:.2f}")
    lost = sum(r["lost"] for r in rounds)
    doubled = sum(r["doubled"] for r in rounds)
    print(f"  lost runs: {lost:.0f}   doubled runs: {doubled:.0f}")
    if lost or doubled:
        sys.exit("runs were lost or doubled")


if __name__ == "__main__":
    main()
