"""Load on the `conceptlens serve` endpoint over loopback: latency, throughput, batching, filter overhead, failover.

Starts a local Ray and Serve on a free 127.0.0.1 port with a run's filter bundle, then for each
scenario sends single-image multipart requests from ``--concurrency`` client threads until
``--requests`` are done or ``--time-cap`` seconds pass:

  predict, batched      /predict, one model replica, max_batch_size 16
  predict, unbatched    /predict, one model replica, max_batch_size 1
  classify, batched     /classify (the bare classifier), one replica, max_batch_size 16
  predict, replica kill /predict, two replicas; one is killed with ray.kill while clients run

and prints a table (p50/p99 latency, successful requests per second, errors, mean model batch, CPU
milliseconds per request of the model replica, the ingress and the HTTP proxy), what the kill cost
(the ingress retries a call whose replica died once, so only what that retry misses fails), and an
in-process timing of the model stages per image (no HTTP, no Ray). Client threads share the
machine's cores with the server, as a loopback benchmark must.

    .venv/bin/python benchmarks/serve_load.py [--config conf/demo.yaml] [--requests 300] [--concurrency 16] [key=value ...]
"""
from __future__ import annotations

import argparse
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import requests

TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(url: str, images: list[bytes], n: int, concurrency: int, cap: float,
         during=None) -> tuple[list[tuple[float, float, bool]], float]:
    """``(start, end, ok)`` per request (seconds since the load began) and the wall time; ``during(t0)``
    runs in its own thread while the clients send."""
    counter, lock, t0 = iter(range(n)), threading.Lock(), time.perf_counter()
    records: list[tuple[float, float, bool]] = []

    def client() -> None:
        session = requests.Session()
        while time.perf_counter() - t0 < cap:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            start = time.perf_counter() - t0
            try:
                r = session.post(url, files=[("files", (f"{i}.png", images[i % len(images)], "image/png"))],
                                 headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
                ok = r.status_code == 200
            except requests.RequestException:
                ok = False
            with lock:
                records.append((start, time.perf_counter() - t0, ok))

    side = threading.Thread(target=during, args=(t0,)) if during else None
    if side:
        side.start()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(client)
    wall = time.perf_counter() - t0
    if side:
        side.join()
    return records, wall


def deploy(cfg, settings) -> None:
    from ray import serve

    from conceptlens.serve.app import build_app

    cfg.serve = settings
    serve.run(build_app(cfg), name="bench", route_prefix="/")


def server_cpu() -> dict[str, float]:
    """CPU seconds so far of the Serve processes: model replicas, ingress replicas, HTTP proxy."""
    import psutil

    out = dict.fromkeys(("model", "ingress", "proxy"), 0.0)
    for proc in psutil.process_iter(["cmdline", "cpu_times"]):
        title = " ".join(proc.info["cmdline"] or [])
        for key, marker in (("model", "bench:FilterModel"), ("ingress", "bench:Ingress"), ("proxy", "ProxyActor")):
            if marker in title and proc.info["cpu_times"]:
                out[key] += proc.info["cpu_times"].user + proc.info["cpu_times"].system
    return out


def batch_stats() -> dict:
    from ray import serve

    return serve.get_deployment_handle("FilterModel", "bench").info.remote().result(timeout_s=30)["batches"]


def kill_one_replica(t0: float, after: float, out: dict) -> None:
    """Kill one FilterModel replica ``after`` s into the load; note when, and when Serve has two running again."""
    import ray
    from ray import serve

    def replicas() -> set[str]:
        return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                if "bench" in a["name"] and "FilterModel" in a["name"]}

    time.sleep(after)
    before = replicas()
    out["killed_at"] = time.perf_counter() - t0
    ray.kill(ray.get_actor(sorted(before)[0], namespace="serve"), no_restart=True)
    while time.perf_counter() - t0 < out["killed_at"] + 60:
        running = serve.status().applications["bench"].deployments["FilterModel"].replica_states.get("RUNNING", 0)
        if replicas() - before and running >= 2:  # a new replica, and it serves
            out["replaced_at"] = time.perf_counter() - t0
            return
        time.sleep(0.2)


def in_process(cfg, images: list[bytes], batch: int = 16, rounds: int = 20) -> list[tuple[str, float]]:
    """ms per image of each model stage at ``batch`` images per call, in this process (no HTTP, no Ray)."""
    import torch

    from conceptlens.models.embedding import Embedder
    from conceptlens.pipeline.tracking import tracking_uri
    from conceptlens.runtime.bundle import bundle_models
    from conceptlens.runtime.filter import ConceptFilter
    from conceptlens.runtime.registered import fetch_bundle
    from conceptlens.serve.app import decode_upload, judge

    torch.set_num_threads(1)  # as in a replica with one CPU
    folder = fetch_bundle(cfg.serve.bundle or str(Path(cfg.run.root) / cfg.run.name / "monitor" / "bundle"),
                          tracking_uri(cfg))
    spec, size = bundle_models(folder)
    embedder = Embedder(spec, "cpu")
    filt = ConceptFilter.load(folder)
    x = np.stack([decode_upload(data, size, 10**8) for data in images[:batch]])
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255)

    def timed(fn) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(rounds):
            fn()
        return (time.perf_counter() - start) / rounds / batch * 1000

    columns = embedder.embed(x)
    with torch.no_grad():
        return [("decode PNG (ingress)", timed(lambda: [decode_upload(d, size, 10**8) for d in images[:batch]])),
                ("classifier only", timed(lambda: embedder.classifier(t))),
                ("classifier + VLM (Embedder)", timed(lambda: embedder.embed(x))),
                ("filter: verdicts + explain", timed(lambda: judge(filt, columns)))]


def kill_report(records, wall: float, kill: dict) -> str:
    """Failures, when the last one ended, and successful requests per second before, during and after."""
    killed, replaced = kill["killed_at"], kill.get("replaced_at", wall)
    failed = [end for _, end, ok in records if not ok]
    last = f"the last {max(failed) - killed:.2f} s after the kill" if failed else "none"

    def rate(a: float, b: float) -> float:
        return sum(ok and a <= end < b for _, end, ok in records) / max(b - a, 1e-9)
    after = f", {rate(replaced, wall):.1f} after the replacement" if replaced < wall else ""
    return (f"\nreplica killed at +{killed:.1f} s of {wall:.0f} s: {len(failed)} of {len(records)} requests failed "
            f"({last}); a replacement replica served {replaced - killed:.1f} s after the kill\n"
            f"successful req/s: {rate(0, killed):.1f} before, {rate(killed, min(replaced, wall)):.1f} on one "
            f"replica{after}")


def row(name: str, replicas: int, max_batch: int, conc: int, records, wall: float, batches: dict | None) -> str:
    ok = [e - s for s, e, good in records if good]
    lat = np.array(ok) * 1000 if ok else np.array([np.nan])
    mean_batch = f"{batches['images'] / max(batches['calls'], 1):.1f}" if batches else "-"
    return (f"{name:<24}{replicas:>4}{max_batch:>6}{conc:>6}{len(records):>6}{len(records) - len(ok):>7}"
            f"{np.percentile(lat, 50):>9.1f}{np.percentile(lat, 99):>9.1f}{len(ok) / wall:>9.1f}{mean_batch:>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], help="YAML config files (default conf/demo.yaml)")
    parser.add_argument("--requests", type=int, default=300, help="requests per scenario")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads")
    parser.add_argument("--time-cap", type=float, default=60.0, help="seconds per scenario at most")
    parser.add_argument("--kill-seconds", type=float, default=30.0, help="length of the replica-kill scenario")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. run.root=/tmp/rs")
    args = parser.parse_args()

    import ray
    from ray import serve

    from conceptlens.config import load_config
    from conceptlens.config import ServeConfig

    cfg = load_config(args.config or ["conf/demo.yaml"], args.overrides + ["run.device=cpu"])
    cfg.serve = ServeConfig()
    manifest = pq.read_table(Path(cfg.run.root) / cfg.run.name / "world" / "manifest.parquet", columns=["path", "split"])
    paths = [p for p, s in zip(manifest["path"].to_pylist(), manifest["split"].to_pylist()) if s == "test"][:64]
    images = [Path(p).read_bytes() for p in paths]

    stages = in_process(cfg, images)
    os.environ["CONCEPTLENS_TOKEN"] = TOKEN  # before Ray starts, so the replicas inherit it
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20,
             log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    n, conc, cap = args.requests, args.concurrency, args.time_cap
    lines, kill = [], {}
    one = dict(min_replicas=1, max_replicas=1, num_cpus=1.0, max_ongoing_requests=32)
    for name, path, batch in (("predict, batched", "predict", 16), ("predict, unbatched", "predict", 1),
                              ("classify, batched", "classify", 16)):
        deploy(cfg, ServeConfig(**one, max_batch_size=batch))
        load(f"{url}/{path}", images, 2 * conc, conc, cap)  # warm-up: first batches, connection pools
        before, cpu = batch_stats(), server_cpu()
        records, wall = load(f"{url}/{path}", images, n, conc, cap)
        after, cpu_after = batch_stats(), server_cpu()
        ok = max(sum(good for _, _, good in records), 1)
        lines.append(row(name, 1, batch, conc, records, wall,
                         {k: after[k] - before[k] for k in ("calls", "images")})
                     + "".join(f"{(cpu_after[k] - cpu[k]) / ok * 1000:>7.1f}" for k in cpu))
        print(lines[-1], flush=True)
    deploy(cfg, ServeConfig(min_replicas=2, max_replicas=2, num_cpus=0.5, max_ongoing_requests=32, max_batch_size=16))
    load(f"{url}/predict", images, 2 * conc, conc, cap)
    # by time, not count: the clients run for --kill-seconds, the kill comes a fifth of the way in
    records, wall = load(f"{url}/predict", images, 10**9, conc, args.kill_seconds,
                         during=lambda t0: kill_one_replica(t0, args.kill_seconds / 5, kill))
    lines.append(row("predict, replica killed", 2, 16, conc, records, wall, None))
    serve.shutdown()
    ray.shutdown()

    print(f"\n{'':<74}{'server CPU ms per request':>25}")
    print(f"{'scenario':<24}{'repl':>4}{'batch':>6}{'conc':>6}{'reqs':>6}{'errors':>7}"
          f"{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'mean b':>7}{'model':>7}{'ingr':>7}{'proxy':>7}")
    print("\n".join(lines))
    print(kill_report(records, wall, kill))
    print("\nin process, batch of 16, one thread, ms per image:")
    for stage, ms in stages:
        print(f"  {stage:<30}{ms:>8.2f}")
    clf, full = stages[1][1], stages[2][1] + stages[3][1]
    print(f"  the filter (VLM + verdicts + explain) costs {full - clf:.2f} ms per image over the classifier "
          f"({full / clf:.1f}x)")


if __name__ == "__main__":
    main()
