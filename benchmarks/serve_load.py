"""Load on the `conceptlens serve` endpoint over loopback: latency, throughput, batching, filter overhead, failover.

Starts a local Ray and Serve on a free 127.0.0.1 port with a run's filter bundle (the bearer token set
before Ray starts, as `conceptlens serve` requires), then for each scenario sends multipart requests from
``--concurrency`` client threads until ``--requests`` are done or ``--time-cap`` seconds pass, all in this
one run, side by side:

  one model replica, max_batch_size 16:
    predict / classify, batched        single-image requests to /predict and to /classify (the bare classifier)
    predict / classify, alone          the same, one client: latency without queueing
    predict, 8 per request             8 images per request, concurrency / 4 clients (the same images in flight)
  one model replica, max_batch_size 1:
    predict / classify, unbatched      single-image requests
  two model replicas:
    predict, replica killed            one is killed with ray.kill while clients run (--kill-seconds)

and prints a table (p50/p99 latency, requests and images per second, errors, mean model batch, CPU
milliseconds per image of the model replica, the ingress, the HTTP proxy and the client threads of this
process), the ratios the serving goals name, what the kill cost (the ingress retries a call whose
replica died once, so only what that retry misses fails), and an in-process CPU time of the model stages
per image at batch 1 and 16 (no HTTP, no Ray). Client threads share the machine's cores with the server,
as a loopback benchmark must.

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
PER_REQUEST = 8  # images per request of the multi-image scenario


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(url: str, images: list[bytes], n: int, concurrency: int, cap: float, per_request: int = 1,
         during=None) -> tuple[list[tuple[float, float, bool]], float]:
    """``(start, end, ok)`` per request of ``per_request`` images (seconds since the load began) and the wall
    time; ``during(t0)`` runs in its own thread while the clients send."""
    counter, lock, t0 = iter(range(n)), threading.Lock(), time.perf_counter()
    records: list[tuple[float, float, bool]] = []

    def client() -> None:
        session = requests.Session()
        while time.perf_counter() - t0 < cap:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            files = [("files", (f"{i}-{k}.png", images[(i * per_request + k) % len(images)], "image/png"))
                     for k in range(per_request)]
            start = time.perf_counter() - t0
            try:
                r = session.post(url, files=files, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
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


def cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of the Serve processes (model replicas, ingress replicas, HTTP proxy) and of this
    process (the client threads)."""
    import psutil

    out = dict.fromkeys(("model", "ingress", "proxy"), 0.0)
    for proc in psutil.process_iter(["cmdline", "cpu_times"]):
        title = " ".join(proc.info["cmdline"] or [])
        for key, marker in (("model", "bench:FilterModel"), ("ingress", "bench:Ingress"), ("proxy", "ProxyActor")):
            if marker in title and proc.info["cpu_times"]:
                out[key] += proc.info["cpu_times"].user + proc.info["cpu_times"].system
    return out | {"client": time.process_time()}


def batch_stats() -> dict:
    from ray import serve

    return serve.get_deployment_handle("FilterModel", "bench").info.remote().result(timeout_s=30)["batches"]


def measure(url: str, images: list[bytes], n: int, conc: int, cap: float, per_request: int = 1) -> dict:
    """One scenario on the deployed app after a warm-up: its records, wall time, model batches and CPU."""
    load(url, images, 2 * conc, conc, cap, per_request)  # warm-up: first batches, connection pools
    before, cpu = batch_stats(), cpu_seconds()
    records, wall = load(url, images, n, conc, cap, per_request)
    after, cpu_after = batch_stats(), cpu_seconds()
    return {"records": records, "wall": wall, "per_request": per_request,
            "batches": {k: after[k] - before[k] for k in ("calls", "images")},
            "cpu": {k: cpu_after[k] - cpu[k] for k in cpu}}


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


def in_process(cfg, images: list[bytes], rounds: int = 20) -> list[tuple[str, float, float]]:
    """CPU ms per image of each model stage at batch 1 and at batch 16, in this process on one thread, with the
    replica's models (no HTTP, no Ray)."""
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
    rows = []
    for batch in (1, 16):
        x = np.stack([decode_upload(data, size, 10**8) for data in images[:batch]])
        t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255)
        columns = embedder.embed(x)

        def cpu_ms(fn) -> float:
            fn()
            start = time.process_time()
            for _ in range(rounds):
                fn()
            return (time.process_time() - start) / rounds / batch * 1000

        with torch.no_grad():
            rows.append([("decode PNG (ingress)", cpu_ms(lambda: [decode_upload(d, size, 10**8)
                                                                  for d in images[:batch]])),
                         ("classifier", cpu_ms(lambda: embedder.classifier(t))),
                         ("VLM image tower", cpu_ms(lambda: embedder.vlm.encode_images(t))),
                         ("filter: verdicts + explain", cpu_ms(lambda: judge(filt, columns)))])
    return [(name, one, sixteen) for (name, one), (_, sixteen) in zip(*rows)]


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


def summary(m: dict) -> dict:
    """p50, p99 (ms), req/s, img/s, mean model batch and CPU ms per image per process of a measured scenario."""
    ok = [e - s for s, e, good in m["records"] if good]
    lat = np.array(ok) * 1000 if ok else np.array([np.nan])
    images = max(len(ok) * m["per_request"], 1)
    return {"p50": np.percentile(lat, 50), "p99": np.percentile(lat, 99), "rps": len(ok) / m["wall"],
            "ips": len(ok) * m["per_request"] / m["wall"], "errors": len(m["records"]) - len(ok),
            "requests": len(m["records"]),
            "batch": m["batches"]["images"] / max(m["batches"]["calls"], 1) if m.get("batches") else None,
            "cpu": {k: v / images * 1000 for k, v in m["cpu"].items()} if m.get("cpu") else None}


def row(name: str, replicas: int, max_batch: int, conc: int, per_request: int, s: dict) -> str:
    batch = f"{s['batch']:.1f}" if s["batch"] is not None else "-"
    cpu = ("".join(f"{v:>7.1f}" for v in s["cpu"].values()) + f"{sum(s['cpu'].values()):>7.1f}") if s["cpu"] else ""
    return (f"{name:<24}{replicas:>4}{max_batch:>6}{conc:>5}{per_request:>5}{s['requests']:>6}{s['errors']:>7}"
            f"{s['p50']:>8.1f}{s['p99']:>8.1f}{s['rps']:>7.1f}{s['ips']:>7.1f}{batch:>7}{cpu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], help="YAML config files (default conf/demo.yaml)")
    parser.add_argument("--requests", type=int, default=300,
                        help="requests per scenario (a third alone, a quarter of 8 images)")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads")
    parser.add_argument("--time-cap", type=float, default=60.0, help="seconds per scenario at most")
    parser.add_argument("--kill-seconds", type=float, default=30.0, help="length of the replica-kill scenario")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. run.root=/tmp/rs")
    args = parser.parse_args()

    import ray
    from ray import serve

    from conceptlens.config import ServeConfig, load_config

    cfg = load_config(args.config or ["conf/demo.yaml"], args.overrides + ["run.device=cpu"])
    cfg.serve = ServeConfig()
    manifest = pq.read_table(Path(cfg.run.root) / cfg.run.name / "world" / "manifest.parquet", columns=["path", "split"])
    paths = [p for p, s in zip(manifest["path"].to_pylist(), manifest["split"].to_pylist()) if s == "test"][:64]
    images = [Path(p).read_bytes() for p in paths]

    stages = in_process(cfg, images)
    os.environ[ServeConfig().token_env] = TOKEN  # before Ray starts, so the replicas inherit it
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20,
             log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    n, conc, cap = args.requests, args.concurrency, args.time_cap
    one = dict(min_replicas=1, max_replicas=1, num_cpus=1.0, max_ongoing_requests=32)
    plan = {16: [("predict, batched", "predict", conc, 1, n), ("classify, batched", "classify", conc, 1, n),
                 ("predict, alone", "predict", 1, 1, n // 3), ("classify, alone", "classify", 1, 1, n // 3),
                 (f"predict, {PER_REQUEST} per request", "predict", max(conc // 4, 1), PER_REQUEST, n // 4)],
            1: [("predict, unbatched", "predict", conc, 1, n), ("classify, unbatched", "classify", conc, 1, n)]}
    lines, results = [], {}
    for batch, scenarios in plan.items():
        deploy(cfg, ServeConfig(**one, max_batch_size=batch))
        for name, path, clients, per_request, count in scenarios:
            results[name] = summary(measure(f"{url}/{path}", images, count, clients, cap, per_request))
            lines.append(row(name, 1, batch, clients, per_request, results[name]))
            print(lines[-1], flush=True)
    deploy(cfg, ServeConfig(min_replicas=2, max_replicas=2, num_cpus=0.5, max_ongoing_requests=32, max_batch_size=16))
    load(f"{url}/predict", images, 2 * conc, conc, cap)
    # by time, not count: the clients run for --kill-seconds, the kill comes a fifth of the way in
    kill: dict = {}
    records, wall = load(f"{url}/predict", images, 10**9, conc, args.kill_seconds,
                         during=lambda t0: kill_one_replica(t0, args.kill_seconds / 5, kill))
    lines.append(row("predict, replica killed", 2, 16, conc, 1,
                     summary({"records": records, "wall": wall, "per_request": 1})))
    serve.shutdown()
    ray.shutdown()

    print(f"\n{'':<84}{'CPU ms per image':>33}")
    print(f"{'scenario':<24}{'repl':>4}{'batch':>6}{'conc':>5}{'img/r':>5}{'reqs':>6}{'errors':>7}"
          f"{'p50 ms':>8}{'p99 ms':>8}{'req/s':>7}{'img/s':>7}{'mean b':>7}"
          f"{'model':>7}{'ingr':>7}{'proxy':>7}{'client':>7}{'total':>7}")
    print("\n".join(lines))
    r = results

    def cpu(name: str) -> float:
        return sum(r[name]["cpu"].values())

    def slower(setting: str) -> str:  # /predict's p50 over /classify's at the same batch settings
        return f"+{r[f'predict, {setting}']['p50'] / r[f'classify, {setting}']['p50'] - 1:.0%} {setting}"
    print(f"\nbatching: {r['predict, batched']['rps'] / r['predict, unbatched']['rps']:.2f}x the unbatched /predict "
          f"throughput ({cpu('predict, unbatched') / cpu('predict, batched'):.2f}x less CPU per image); "
          f"{r['classify, batched']['rps'] / r['classify, unbatched']['rps']:.2f}x for /classify")
    print(f"the filter over the bare classifier: p50 {slower('batched')}, {slower('unbatched')}, {slower('alone')}; "
          f"CPU per image +{cpu('predict, batched') / cpu('classify, batched') - 1:.0%} batched")
    print(kill_report(records, wall, kill))
    print("\nin process, one thread, CPU ms per image:   batch 1  batch 16")
    for stage, single, batched in stages:
        print(f"  {stage:<40}{single:>8.2f}{batched:>9.2f}")


if __name__ == "__main__":
    main()
