"""`make bench`: strata serve against llama-server, llama-cpp-python's server and a full reload, in one run."""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tqdm.auto import tqdm  # noqa: E402

import measure  # noqa: E402
import report  # noqa: E402
from llama_server import binary_path, ensure_llama_server  # noqa: E402
from models import BenchModelSpec, ensure_bench_model  # noqa: E402
from peers import LLAMA_SERVER, SHORT_NAMES, STRATA, PeerSpec, peer_specs, start, with_extra_lora  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

DESCRIPTION = """\
Benchmark strata serve against llama.cpp's llama-server and llama-cpp-python's own server
(python -m llama_cpp.server), all on the same Q4_K_M GGUF, the same thread count and the same portable
llama.cpp build flags, one server running at a time, peers alternated each round (A/B interleaved).

Measures (medians over every sample):
  decode tokens/s and TTFT of one streamed greedy completion; the ratios strata / each peer;
  adapter switch latency between two loaded adapters via POST /lora-adapters (p50/p95; strata and llama-server);
  loading a never-seen adapter by path (strata) against restarting a server with the new --lora until ready;
  4 concurrent streams: aggregate tokens/s, strata (one request at a time) against llama-server -np 4;
  the decode bound from measured memory bandwidth (numpy) / weight bytes read per token, and each peer's fraction.

One-time costs, cached under ~/.cache/strata (or $STRATA_CACHE): llama-server is built from the llama.cpp sources
in the pinned llama-cpp-python sdist (cmake, llama-server target only); the bench model (random-weight Llama made
with the kit, ~280 MB at Q4_K_M) and three GGUF LoRAs are made once. Output: runs/bench-<timestamp>/results.md,
results.json, results.png and the servers' logs; the table is printed at the end."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench/run.py", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 round, 1 completion of 16 tokens per peer, 10 switches (about 3 minutes)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each round starts every peer once "
                   "(default 3)")
    p.add_argument("--repeats", type=int, default=2, help="streamed completions per peer per round (default 2)")
    p.add_argument("--max-tokens", type=int, default=96, help="tokens per completion (default 96)")
    p.add_argument("--switches", type=int, default=30, help="adapter switches per peer per round (default 30)")
    p.add_argument("--concurrent-tokens", type=int, default=48, help="tokens per stream in the 4-stream test "
                   "(default 48)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads for every server "
                   "(default: all cores)")
    p.add_argument("--n-ctx", type=int, default=1024, help="context per sequence (llama-server gets 4x for -np 4)")
    p.add_argument("--peers", default=",".join(SHORT_NAMES),
                   help=f"comma-separated peers to run, from {', '.join(SHORT_NAMES)} (default: all three)")
    p.add_argument("--build-timeout", type=float, default=3600, help="give up building llama-server after this many "
                   "seconds and bench the rest (default 3600)")
    p.add_argument("--llama-server", type=Path, default=None, help="use this llama-server binary instead of "
                   "building one (it should be built with the same flags as the wheel)")
    p.add_argument("--no-build", action="store_true", help="do not build llama-server; run it only if cached")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/bench-<timestamp>)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.repeats, args.max_tokens, args.switches, args.concurrent_tokens = 1, 1, 16, 10, 8
    for name in ("rounds", "repeats", "switches", "threads", "n_ctx"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    unknown = [n for n in args.peers.split(",") if n.strip() not in SHORT_NAMES]
    if unknown:
        p.error(f"unknown peer(s) {unknown}; choose from {', '.join(SHORT_NAMES)}")
    args.peers = [SHORT_NAMES[n.strip()] for n in args.peers.split(",")]
    if args.max_tokens < 2 or args.concurrent_tokens < 2:
        p.error("--max-tokens and --concurrent-tokens must be at least 2")
    return args


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    return {"cpu": next((line.split(":", 1)[1].strip() for line in lscpu if line.startswith("Model name")), "?"),
            "cores": os.cpu_count(), "mem_gb": round(int(mem) / 1e6, 1), "lscpu_head": lscpu[:10],
            "python": platform.python_version(), "llama_cpp_python": metadata.version("llama-cpp-python")}


def session(spec: PeerSpec, rnd: int, args, model, out: Path, data: dict) -> None:
    """One launch of one peer: warm up, then every measure it supports; stop it; relaunch with a new --lora."""
    running = start(spec, out / "logs")
    data.setdefault("start", []).append(running.start_s)
    try:
        base, extra = running.base_url, spec.extra_body
        measure.single_stream(base, [f"warm-{rnd}"], 4, extra)
        tags = [f"r{rnd}-{i}" for i in range(args.repeats)]
        data.setdefault("single", []).extend(asdict(s) for s in measure.single_stream(base, tags, args.max_tokens,
                                                                                        extra))
        if spec.switch_form:
            data.setdefault("switch_id", []).extend(measure.switch_latencies(base, args.switches, "id"))
        if spec.loads_by_path:
            pair = (model.loras["alpha"], model.loras["beta"])
            data.setdefault("switch_path", []).extend(measure.switch_latencies(base, args.switches, "path", pair))
        if spec.name in (STRATA, LLAMA_SERVER):
            tags = [f"c{rnd}-{i}" for i in range(4)]
            data.setdefault("concurrent", []).append(measure.concurrent_streams(base, tags, args.concurrent_tokens,
                                                                                extra))
        if spec.loads_by_path:
            data.setdefault("first_load", []).append(measure.first_load(base, model.loras["gamma"]))
    finally:
        stop_s = running.stop()
    if not spec.loads_by_path:
        again = start(with_extra_lora(spec, model.loras["gamma"]), out / "logs")
        data.setdefault("reload", []).append(stop_s + again.start_s)
        again.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the server under test
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or REPO / "runs" / f"bench-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    load_start = os.getloadavg()
    notes: list[str] = []
    version = metadata.version("llama-cpp-python")

    print("measuring memory bandwidth ...", flush=True)
    bandwidth = measure.memory_bandwidth(threads=args.threads)
    spec = BenchModelSpec()
    model = ensure_bench_model(spec)
    one_time = {"bench_model_build_s": model.meta.get("built_s")}

    server, info = (args.llama_server, {"binary": str(args.llama_server), "cached": True}) if args.llama_server \
        else (None, {})
    if server is None and LLAMA_SERVER in args.peers:
        if args.no_build and not binary_path(version).is_file():
            info = {"error": "llama-server is not built and --no-build was given"}
        else:
            server, info = ensure_llama_server(version, timeout=args.build_timeout, log=lambda m: print(m, flush=True))
    one_time["llama_server"] = info
    if info.get("error"):
        notes.append(f"llama-server not run: {info['error']}")
        print(f"WARNING: {notes[-1]}", flush=True)

    specs = peer_specs(model.gguf, model.loras, args.threads, args.n_ctx, server)
    wanted = [name for name in args.peers if name in specs]
    raw_peers: dict[str, dict] = {name: {} for name in wanted}
    steps = [(rnd, wanted[(rnd + k) % len(wanted)]) for rnd in range(args.rounds) for k in range(len(wanted))]
    for rnd, name in tqdm(steps, desc="bench sessions", unit="launch"):
        try:
            session(specs[name], rnd, args, model, out, raw_peers[name])
        except (RuntimeError, OSError, ValueError) as exc:
            raw_peers[name].setdefault("errors", []).append(f"round {rnd}: {exc}")
            print(f"WARNING: {name} round {rnd}: {exc}", flush=True)

    info_machine = machine()
    info_machine.update(loadavg_start=load_start, loadavg_end=os.getloadavg())
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    raw = {"machine": info_machine, "config": config,
           "model": {"gguf": str(model.gguf), **{k: model.meta[k] for k in ("gguf_bytes", "weight_bytes_per_token")},
                     "spec": model.meta["spec"]},
           "bandwidth": bandwidth, "one_time": one_time, "peers": raw_peers, "notes": notes,
           "wall_s": time.perf_counter() - began}
    summary, table = report.write(raw, out)
    print()
    print(table)
    print(f"machine: {info_machine['cpu']}, {info_machine['cores']} cores, {info_machine['mem_gb']} GB; "
          f"load average start {info_machine['loadavg_start'][0]:.1f}, end {info_machine['loadavg_end'][0]:.1f}")
    print(f"wrote {out}/results.md, results.json, results.png in {raw['wall_s'] / 60:.1f} min")
    return 0 if all(not d.get("errors") for d in raw_peers.values()) and wanted else 1


if __name__ == "__main__":
    sys.exit(main())
