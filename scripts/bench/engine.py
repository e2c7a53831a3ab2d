"""The decode loop alone, in-process (no HTTP): strata's Engine on the bench model, jobs submitted straight to its
scheduler, in interleaved rounds of each KV layout. It measures what the serving rows cannot separate from the
HTTP stack: aggregate tok/s of 4 streams on one adapter, 4 streams on 4 adapters, 1 stream with an adapter and 4
streams with long prompts (where a unified KV cache makes every token attend over all slots' cells), plus the
ubatches per llama_decode and the graphs llama.cpp reused (from strata's own /metrics counters).

    python scripts/bench/engine.py [--rounds 5] [--tokens 48] [--threads 2]

This is the script behind the README's in-process figures; it prints medians with 95 % bootstrap intervals."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import STARTUP_LORAS, ensure_bench_model  # noqa: E402
from stats import fmt_interval, median_interval, ratio_interval  # noqa: E402

from strata.serve.config import ServeConfig  # noqa: E402
from strata.serve.engine import Engine  # noqa: E402
from strata.serve.jobs import Done, Failed, Job  # noqa: E402
from strata.serve.metrics import Metrics  # noqa: E402
from strata.serve.registry import Ref  # noqa: E402
from strata.serve.sampling import Sampling  # noqa: E402

LAYOUTS = {"per-slot KV, batch in sequence order": False, "unified KV": True}
WORDS = "the lessee shall recognize a right-of-use asset and a lease liability at the commencement date".split()


def prompt(tag: int, words: int) -> str:
    return f"[{tag}] " + " ".join(WORDS[i % len(WORDS)] for i in range(words))


def run_streams(engine: Engine, prompts: list[str], sets: list[int | None], tokens: int) -> dict:
    """len(prompts) greedy jobs at once (job i under adapter sets[i] at scale 1, None: base); aggregate tok/s over
    the wall time, decode tok/s after each stream's first token, ubatches per decode and graphs reused."""
    metrics = engine.metrics
    before = _counters(metrics)
    left = [len(prompts)]
    finished = threading.Event()
    stamps: list[list[float]] = [[] for _ in prompts]
    errors: list[str] = []

    def sink_for(i: int):
        def sink(event) -> None:
            if isinstance(event, Failed):
                errors.append(event.error.message)
            elif not isinstance(event, Done):
                stamps[i].append(time.perf_counter())
                return
            left[0] -= 1  # sinks run on the decode thread, one at a time
            if not left[0]:
                finished.set()
        return sink

    jobs = []
    for i, (text, adapter) in enumerate(zip(prompts, sets)):
        refs = [] if adapter is None else [Ref(scale=1.0, id=adapter)]
        lora = engine.registry.acquire(engine.registry.resolve(refs))
        jobs.append(Job(prompt=engine.model.tokenize(text), sampling=Sampling(temperature=0.0), lora=lora,
                        max_tokens=tokens, stops=[], sink=sink_for(i), ignore_eos=True, reuse_prefix=False))
    started = time.perf_counter()
    for job in jobs:
        engine.scheduler.submit(job)
    finished.wait()
    if errors:
        raise RuntimeError(f"a job failed: {errors[0]}")
    wall = max(s[-1] for s in stamps) - started
    first = min(s[0] for s in stamps)
    total = sum(len(s) for s in stamps)
    after = _counters(metrics)
    steps = after["decodes"] - before["decodes"]
    return {"aggregate_tps": total / wall, "decode_tps": (total - len(stamps)) / (max(s[-1] for s in stamps) - first),
            "ubatches_per_decode": (after["ubatches"] - before["ubatches"]) / steps if steps else None,
            "graphs_reused": after["reused"] - before["reused"], "decodes": steps,
            "set_switches": after["switches"] - before["switches"]}


def _counters(metrics: Metrics) -> dict:
    get = metrics.registry.get_sample_value
    return {"ubatches": get("strata_decode_ubatches_sum") or 0.0, "decodes": get("strata_decode_ubatches_count") or 0,
            "reused": get("strata_graphs_reused_total") or 0.0, "switches": get("strata_set_switches") or 0.0}


MEASURES = {
    "4 streams, one adapter": lambda e, a, r: run_streams(e, [prompt(r * 10 + i, 30) for i in range(4)], [0] * 4,
                                                          a.tokens),
    "4 streams, an adapter each": lambda e, a, r: run_streams(e, [prompt(r * 10 + i, 30) for i in range(4)],
                                                              [0, 1, 2, 3], a.tokens),
    "1 stream, one adapter": lambda e, a, r: run_streams(e, [prompt(r * 10, 30)], [0], a.tokens * 2),
    "4 streams, one adapter, long prompts": lambda e, a, r: run_streams(
        e, [prompt(r * 10 + i, a.long_words) for i in range(4)], [0] * 4, a.tokens),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench/engine.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each runs every layout once)")
    p.add_argument("--tokens", type=int, default=48, help="tokens per stream (1 stream: twice this)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--n-ctx", type=int, default=1280, help="context per slot")
    p.add_argument("--long-words", type=int, default=700, help="words of each long prompt (about 1.3 tokens each)")
    p.add_argument("--out", type=Path, default=None, help="write the raw results here as JSON")
    args = p.parse_args(argv)
    model = ensure_bench_model()
    loras = [(str(model.loras[name]), 0.0) for name in STARTUP_LORAS]
    raw: dict[str, dict[str, list[dict]]] = {layout: {} for layout in LAYOUTS}
    load = [os.getloadavg()[0]]
    for rnd in range(args.rounds):
        order = list(LAYOUTS) if rnd % 2 == 0 else list(reversed(LAYOUTS))
        for layout in order:
            config = ServeConfig(model=model.gguf, loras=loras, lora_init_without_apply=True, n_ctx=args.n_ctx,
                                 n_threads=args.threads, parallel=4, embeddings=False, kv_unified=LAYOUTS[layout],
                                 seed=0)
            engine = Engine(config, Metrics())
            try:
                run_streams(engine, [prompt(999, 8)], [None], 4)  # warm-up
                for name, measure in MEASURES.items():
                    raw[layout].setdefault(name, []).append(measure(engine, args, rnd))
            finally:
                engine.close()
            print(f"round {rnd + 1}/{args.rounds}: {layout} done", flush=True)
        load.append(os.getloadavg()[0])
    first, second = list(LAYOUTS)
    print(f"\nIn-process engine, {args.rounds} interleaved rounds, {args.threads} threads, load average "
          f"{min(load):.1f}-{max(load):.1f} (a shared machine: compare within a row)\n")
    print(f"| measure | {first} tok/s | ubatches/decode | {second} tok/s | ubatches/decode | "
          f"{first} ÷ {second} |")
    print("|---|---|---|---|---|---|")
    for name in MEASURES:
        key = "decode_tps" if "long" in name else "aggregate_tps"
        a = [r[key] for r in raw[first][name]]
        b = [r[key] for r in raw[second][name]]
        ua = median_interval([r["ubatches_per_decode"] for r in raw[first][name]])
        ub = median_interval([r["ubatches_per_decode"] for r in raw[second][name]])
        print(f"| {name}{' (decode after prefill)' if key == 'decode_tps' else ''} | {fmt_interval(median_interval(a))} "
              f"| {ua[0]:.2f} | {fmt_interval(median_interval(b))} | {ub[0]:.2f} | {fmt_interval(ratio_interval(a, b))} |")
    if args.out:
        args.out.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()}, "load": load,
                                        "raw": raw}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
