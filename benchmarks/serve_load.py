"""The filter's two modes side by side, and load on the `conceptlens serve` endpoint over loopback: detection
AUROCs, latency over the bare classifier, throughput, batching, failover, start-up to ready.

First, on a finished run (embed, analyze, attack, monitor, rootcause, explain), the filter is fitted in each mode
of ``monitor.concepts_from`` as `monitor` fits it (``aligned``: concept signals from the classifier's encoder
features through the aligner, no VLM image tower per request; ``vlm``: also the VLM's image embedding, today's
filter) and scored on test: misclassification AUROC, adversarial AUROC (attacks that flipped a correct
prediction against the correctly classified clean test rows, all attacks pooled and the worst attack/ε), next to
the run's own monitor numbers (the filter as the run made it). Each mode's bundle is written and served.

Then a local Ray and Serve on a free 127.0.0.1 port (the bearer token set before Ray starts, as `conceptlens
serve` requires), one app of one replica per mode and batch size, all up at once; in each of ``--rounds`` rounds
the scenarios take turns (so that load from other jobs on the machine falls on all of them alike), each sending
multipart requests from ``--concurrency`` client threads until ``--requests`` are done or ``--time-cap`` seconds
pass; a scenario's rounds are pooled:

  per mode, max_batch_size 16:
    predict / classify, batched        single-image requests to /predict and to /classify (the bare classifier)
    predict / classify, alone          the same, one client: latency without queueing
    predict, 8 per request             8 images per request, concurrency / 4 clients (first mode only)
  per mode, max_batch_size 1:
    predict / classify, unbatched      single-image requests
  then two replicas (first mode only):
    predict, replica killed            one is killed with ray.kill while clients run (--kill-seconds)

and prints a table (p50/p99 latency, requests and images per second, errors, mean model batch, CPU
milliseconds per image of the replica, the HTTP proxy and the client threads of this process), the ratios the
serving goals name, what the kill cost, an in-process CPU time of the model stages per image at batch 1 and 16
(no HTTP, no Ray), and last the start-up to ready of `conceptlens serve` per mode: from starting the command to
the first 200 from /healthz. Client threads share the machine's cores with the server, as a loopback benchmark
must.

    .venv/bin/python benchmarks/serve_load.py [--config conf/demo.yaml] [--requests 200] [--rounds 3]
        [--concurrency 16] [--modes aligned,vlm] [key=value ...]
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


def deploy(cfg, settings, app: str = "bench") -> None:
    from ray import serve

    from conceptlens.serve.app import build_app

    cfg.serve = settings
    serve.run(build_app(cfg), name=app, route_prefix=f"/{app}")


def cpu_seconds(apps: list[str]) -> dict[str, float]:
    """CPU seconds so far of the Serve processes (the replicas of ``apps``: HTTP, decoding and models; the HTTP
    proxy) and of this process (the client threads)."""
    import psutil

    out = dict.fromkeys(("replica", "proxy"), 0.0)
    markers = [("replica", f"{app}:FilterModel") for app in apps] + [("proxy", "ProxyActor")]
    for proc in psutil.process_iter(["cmdline", "cpu_times"]):
        title = " ".join(proc.info["cmdline"] or [])
        for key, marker in markers:
            if marker in title and proc.info["cpu_times"]:
                out[key] += proc.info["cpu_times"].user + proc.info["cpu_times"].system
    return out | {"client": time.process_time()}


def batch_stats(app: str = "bench") -> dict:
    from ray import serve

    return serve.get_deployment_handle("FilterModel", app).info.remote().result(timeout_s=30)["batches"]


def measure(url: str, app: str, images: list[bytes], n: int, conc: int, cap: float, per_request: int = 1) -> dict:
    """One scenario on a deployed app after a warm-up: its records, wall time, model batches and CPU."""
    load(url, images, 2 * conc, conc, cap, per_request)  # warm-up: first batches, connection pools
    before, cpu = batch_stats(app), cpu_seconds([app])
    records, wall = load(url, images, n, conc, cap, per_request)
    after, cpu_after = batch_stats(app), cpu_seconds([app])
    return {"records": records, "wall": wall, "per_request": per_request,
            "batches": {k: after[k] - before[k] for k in ("calls", "images")},
            "cpu": {k: cpu_after[k] - cpu[k] for k in cpu}}


def merge(a: dict | None, b: dict) -> dict:
    """Two measurements of one scenario as one: records shifted after ``a``'s, walls, batches and CPU summed."""
    if a is None:
        return b
    shift = a["wall"]
    return {"records": a["records"] + [(s + shift, e + shift, ok) for s, e, ok in b["records"]],
            "wall": a["wall"] + b["wall"], "per_request": a["per_request"],
            "batches": {k: a["batches"][k] + b["batches"][k] for k in a["batches"]},
            "cpu": {k: a["cpu"][k] + b["cpu"][k] for k in a["cpu"]}}


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


def in_process(bundles: dict[str, Path], images: list[bytes], rounds: int = 20) -> list[tuple[str, float, float]]:
    """CPU ms per image of each model stage at batch 1 and at batch 16, in this process on one thread, with the
    replica's models (no HTTP, no Ray); the filter's stage per mode (``bundles``: mode -> bundle folder)."""
    import torch
    from threadpoolctl import threadpool_limits

    from conceptlens.models.embedding import Embedder
    from conceptlens.runtime.bundle import bundle_models
    from conceptlens.runtime.filter import ConceptFilter
    from conceptlens.serve.app import decode_upload, judge

    torch.set_num_threads(1)  # as in a replica with one CPU
    spec, size = bundle_models(next(iter(bundles.values())))
    embedder = Embedder(spec, "cpu")
    filters = {mode: ConceptFilter.load(folder) for mode, folder in bundles.items()}
    rows = []
    for batch in (1, 16):
        x = np.stack([decode_upload(data, size, 10**8) for data in images[:batch]])
        t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255)
        columns = embedder.embed(x)

        def cpu_ms(fn) -> float:  # this thread's CPU: idle BLAS or Ray threads of the process do not count
            fn()
            start = time.thread_time()
            for _ in range(rounds):
                fn()
            return (time.thread_time() - start) / rounds / batch * 1000

        with torch.no_grad(), threadpool_limits(1):  # NumPy's BLAS on this thread alone, as torch
            rows.append([("decode PNG", cpu_ms(lambda: [decode_upload(d, size, 10**8) for d in images[:batch]])),
                         ("classifier", cpu_ms(lambda: embedder.classifier(t))),
                         ("VLM image tower (vlm mode only)", cpu_ms(lambda: embedder.vlm.encode_images(t)))]
                        + [(f"filter {mode}: verdicts + explain", cpu_ms(lambda f=f: judge(f, columns)))
                           for mode, f in filters.items()])
    return [(name, one, sixteen) for (name, one), (_, sixteen) in zip(*rows)]


def fit_modes(cfg, modes: list[str], out: Path) -> dict[str, dict]:
    """Per mode: the filter fitted on the run's calib rows as `monitor` fits it, its test AUROCs and its bundle
    (with the run's failure modes, matched in a space the mode serves) under ``out``."""
    from conceptlens.jobs.monitor import against_clean, evaluate, load_filter, read_adversarial
    from conceptlens.jobs.rootcause import concept_analysis
    from conceptlens.pipeline.shards import read_rows
    from conceptlens.runtime.bundle import bundle_models, save_bundle
    from conceptlens.runtime.failure_modes import FailureModes
    from conceptlens.runtime.filter import successful_attacks

    run = Path(cfg.run.root) / cfg.run.name
    clean = {split: read_rows(run / "embed" / "embeddings", [split], ["id"]) for split in ("calib", "test")}
    adversarial, off = read_adversarial(run / "attack" / "embeddings")
    if off:
        print(f"adversarial detection off: {off}")
    spec, size = bundle_models(run / "monitor" / "bundle")  # the models the run's own bundle carries
    found = {}
    for mode in modes:
        start = time.perf_counter()
        filt = load_filter(run / "analyze", mode).fit(clean["calib"], adversarial["calib"] if adversarial else None,
                                                      fpr=cfg.monitor.fpr, ridge=cfg.analyze.ridge, seed=cfg.monitor.seed)
        test = {"clean": filt.score_all(clean["test"])} | ({"adv": filt.score_all(adversarial["test"])}
                                                           if adversarial else {})
        scores = {"clean_mis": test["clean"]["misclassified"]}
        result = {}
        if adversarial:
            scores |= {"clean_adv": test["clean"]["adversarial"], "adversarial": test["adv"]["adversarial"]}
            wrong = clean["test"]["prediction"] != clean["test"]["label_index"]
            hits = successful_attacks(adversarial["test"])
            result["adv_pooled"] = against_clean(scores["clean_adv"][~wrong], scores["adversarial"][hits],
                                                 cfg.monitor.fpr)["auroc"]
        table = evaluate({"filter": scores}, clean["test"], adversarial["test"] if adversarial else None,
                         cfg.monitor.fpr)
        result |= {"mis": table[0]["auroc"], "tasks": {r["task"]: r["auroc"] for r in table[1:]}}
        if adversarial:
            worst = min(result["tasks"], key=result["tasks"].get)
            result["adv_worst"] = (worst, result["tasks"][worst])
        bundle = save_bundle(filt, out / f"bundle-{mode}", spec, image_size=size, run=cfg.run.name)
        modes_ = FailureModes.from_outputs(run / "rootcause", run / "explain", clean["calib"],
                                           concepts=concept_analysis(cfg), vlm=filt.needs_vlm)
        if modes_ is not None:
            modes_.save(bundle)
        found[mode] = result | {"bundle": bundle, "fit_s": time.perf_counter() - start}
    metrics = run / "monitor" / "metrics.json"
    if metrics.is_file():  # the filter as the run made it (the run's code), for comparison
        import json

        detection = json.loads(metrics.read_text())["detection"]
        mine = {k.split(".", 1)[1]: v["auroc"] for k, v in detection.items() if k.startswith("concept_filter.")}
        run_result = {"mis": mine.get("misclassified"), "tasks": {k: v for k, v in mine.items()
                                                                  if k != "misclassified" and not k.startswith("unseen")}}
        if run_result["tasks"]:
            worst = min(run_result["tasks"], key=run_result["tasks"].get)
            run_result["adv_worst"] = (worst, run_result["tasks"][worst])
        found["run's monitor"] = run_result
    return found


def startup(config: list[str], overrides: list[str], bundle: Path, timeout: float = 300.0) -> tuple[float, list[str]]:
    """Seconds from starting `conceptlens serve` on ``bundle`` to its first 200 from /healthz, and the lines it
    printed meanwhile (its own Ray: run with no other Ray of this process up)."""
    import signal
    import subprocess
    import sys

    port = free_port()
    command = [str(Path(sys.executable).with_name("conceptlens")), "serve", *(f"--config={c}" for c in config),
               *overrides, f"serve.bundle={bundle}", f"serve.port={port}"]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ | {"CONCEPTLENS_TOKEN": TOKEN})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    ready = float("nan")
    try:
        while time.perf_counter() - start < timeout and proc.poll() is None:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    ready = time.perf_counter() - start
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    reader.join(5)
    return ready, [line.rstrip() for line in lines if line.startswith("serve:")]


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
    parser.add_argument("--requests", type=int, default=200,
                        help="requests per scenario and round (a third alone, a quarter of 8 images)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the scenarios take turns in each")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads")
    parser.add_argument("--time-cap", type=float, default=60.0, help="seconds per scenario at most")
    parser.add_argument("--kill-seconds", type=float, default=30.0, help="length of the replica-kill scenario (0: skip)")
    parser.add_argument("--modes", default="aligned,vlm", help="monitor.concepts_from modes, the first gets the "
                                                               "multi-image and kill scenarios")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up to ready measurement")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. run.root=/tmp/rs")
    args = parser.parse_args()

    import tempfile

    import ray
    from ray import serve

    from conceptlens.config import ServeConfig, load_config

    configs = args.config or ["conf/demo.yaml"]
    cfg = load_config(configs, args.overrides + ["run.device=cpu"])
    cfg.serve = ServeConfig()
    manifest = pq.read_table(Path(cfg.run.root) / cfg.run.name / "world" / "manifest.parquet", columns=["path", "split"])
    paths = [p for p, s in zip(manifest["path"].to_pylist(), manifest["split"].to_pylist()) if s == "test"][:64]
    images = [Path(p).read_bytes() for p in paths]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    work = Path(tempfile.mkdtemp(prefix="serve_load-"))

    fitted = fit_modes(cfg, modes, work)
    stages = in_process({m: fitted[m]["bundle"] for m in modes}, images)
    os.environ[ServeConfig().token_env] = TOKEN  # before Ray starts, so the replicas inherit it
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20,
             log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    n, conc, cap = args.requests, args.concurrency, args.time_cap
    # every (mode, batch size) its own app of one replica, all up at once, so that the scenarios can take turns in
    # each round: a load that comes and goes on the machine (other jobs) falls on all of them alike
    apps = {(mode, batch): f"{mode}{batch}" for mode in modes for batch in (16, 1)}
    for (mode, batch), app in apps.items():
        deploy(cfg, ServeConfig(min_replicas=1, max_replicas=1, num_cpus=2 / len(apps), max_ongoing_requests=32,
                                max_batch_size=batch, bundle=str(fitted[mode]["bundle"])), app)
    plan = []
    for mode in modes:
        plan += [(mode, 16, "predict, batched", "predict", conc, 1, n), (mode, 16, "classify, batched", "classify", conc, 1, n),
                 (mode, 16, "predict, alone", "predict", 1, 1, n // 3), (mode, 16, "classify, alone", "classify", 1, 1, n // 3),
                 (mode, 1, "predict, unbatched", "predict", conc, 1, n), (mode, 1, "classify, unbatched", "classify", conc, 1, n)]
    plan.append((modes[0], 16, f"predict, {PER_REQUEST} per request", "predict", max(conc // 4, 1), PER_REQUEST, n // 4))
    measured: dict = {}
    for round_ in range(args.rounds):
        for mode, batch, name, path, clients, per_request, count in plan:
            app = apps[(mode, batch)]
            key = (mode, batch, name, clients, per_request)
            measured[key] = merge(measured.get(key), measure(f"{url}/{app}/{path}", app, images, count, clients, cap,
                                                             per_request))
        print(f"round {round_ + 1} of {args.rounds} done", flush=True)
    lines, results = [], {mode: {} for mode in modes}
    for (mode, batch, name, clients, per_request), m in measured.items():
        results[mode][name] = summary(m)
        lines.append(row(f"{mode}: {name}", 1, batch, clients, per_request, results[mode][name]))
    for app in apps.values():
        serve.delete(app)
    kill: dict = {}
    if args.kill_seconds > 0:
        deploy(cfg, ServeConfig(min_replicas=2, max_replicas=2, num_cpus=0.5, max_ongoing_requests=32,
                                max_batch_size=16, bundle=str(fitted[modes[0]]["bundle"])))
        load(f"{url}/bench/predict", images, 2 * conc, conc, cap)
        # by time, not count: the clients run for --kill-seconds, the kill comes a fifth of the way in
        records, wall = load(f"{url}/bench/predict", images, 10**9, conc, args.kill_seconds,
                             during=lambda t0: kill_one_replica(t0, args.kill_seconds / 5, kill))
        lines.append(row(f"{modes[0]}: predict, replica killed", 2, 16, conc, 1,
                         summary({"records": records, "wall": wall, "per_request": 1})))
    serve.shutdown()
    ray.shutdown()
    ready = {} if args.no_startup else {mode: startup(configs, args.overrides, fitted[mode]["bundle"])
                                        for mode in modes}

    print("\nthe filter's modes on the run's test rows (AUROC; adversarial: attacks that flipped a correct "
          "prediction vs correct clean rows)")
    print(f"{'filter':<16}{'misclassified':>14}{'adv pooled':>12}{'adv worst (attack@eps)':>34}")
    for name, f in fitted.items():
        pooled = f"{f['adv_pooled']:.3f}" if "adv_pooled" in f else "-"
        worst = f"{f['adv_worst'][1]:.3f} ({f['adv_worst'][0]})" if "adv_worst" in f else "-"
        print(f"{name:<16}{f['mis']:>14.3f}{pooled:>12}{worst:>34}")
    tasks = sorted({t for f in fitted.values() for t in f["tasks"]})
    if tasks:
        print(f"{'per attack':<16}" + "".join(f"{t.replace('_eps', '@'):>10}" for t in tasks))
        for name, f in fitted.items():
            print(f"{name:<16}" + "".join(f"{f['tasks'].get(t, float('nan')):>10.3f}" for t in tasks))

    print(f"\n{'':<94}{'CPU ms per image':>28}")
    print(f"{'scenario':<34}{'repl':>4}{'batch':>6}{'conc':>5}{'img/r':>5}{'reqs':>6}{'errors':>7}"
          f"{'p50 ms':>8}{'p99 ms':>8}{'req/s':>7}{'img/s':>7}{'mean b':>7}"
          f"{'replica':>8}{'proxy':>7}{'client':>7}{'total':>7}")
    print("\n".join(lines))

    for mode in modes:
        r = results[mode]

        def cpu(name: str) -> float:
            return sum(r[name]["cpu"].values())

        def over(setting: str) -> str:  # /predict's p50 over /classify's at the same batch settings
            return f"{r[f'predict, {setting}']['p50'] / r[f'classify, {setting}']['p50']:.2f}x {setting}"
        print(f"\n{mode}: the filter over the bare classifier, p50: {over('batched')}, {over('unbatched')}, "
              f"{over('alone')}; CPU per image {cpu('predict, batched') / cpu('classify, batched'):.2f}x batched")
        print(f"{mode}: batching: {r['predict, batched']['rps'] / r['predict, unbatched']['rps']:.2f}x the unbatched "
              f"/predict throughput ({cpu('predict, unbatched') / cpu('predict, batched'):.2f}x less CPU per image); "
              f"{r['classify, batched']['rps'] / r['classify, unbatched']['rps']:.2f}x for /classify")
    if kill:
        print(kill_report(records, wall, kill))
    for mode, (seconds, said) in ready.items():
        print(f"\n{mode}: `conceptlens serve` start-up to the first 200 from /healthz: {seconds:.1f} s")
        for line in said:
            print(f"  | {line}")
    print("\nin process, one thread, CPU ms per image:   batch 1  batch 16")
    for stage, single, batched in stages:
        print(f"  {stage:<40}{single:>8.2f}{batched:>9.2f}")


if __name__ == "__main__":
    main()
