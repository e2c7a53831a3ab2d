"""Soft prompts: what serving and training them costs, measured side by side in one run (the machine is shared, so
only interleaved ratios mean anything).

    .venv/bin/python scripts/bench/softprompts.py [--rounds 5] [--tokens 64] [--virtual 20] [--threads 2]

On the kit's tiny base (made once under a temp dir, or --base HF_DIR with --gguf F16.gguf), it measures, each round
alternating the order of the two sides:
  1. decode tok/s of one greedy stream with a 20-token soft prompt against the same request without one (the soft
     prompt's KV cached from an earlier request, so only decode differs; target: within noise);
  2. the prefill cost of the k virtual tokens: the time to first token with cache_prompt false, with the soft
     prompt against without it (their difference is what the k-row embedding batch costs), and that difference
     per virtual token against the per-token cost of the prompt's own prefill;
  3. training time per epoch of a 20-token soft prompt against a level-1 LoRA on the same kit data (each its own
     process, the Trainer's step time as training_summary.json records it).
Ratios are reported with a 95 % bootstrap interval over the rounds. Output: a markdown table on stdout and
results.json under --out (default runs/bench-softprompts-<timestamp>/).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "When is revenue recognised under a contract with a customer?"

TRAIN = r'''
import json, sys, time
from pathlib import Path
from strata.settings import Settings
spec = json.loads(sys.argv[1])
settings = Settings.resolve(workspace=spec["workspace"], base_model=spec["base"], n_threads=spec["threads"])
if spec["kind"] == "lora":
    from strata.train.trainer import train_level
    (out,) = train_level(settings, 1, overrides=spec["overrides"], progress=False)
else:
    from strata.train.softprompt import train_soft_prompt
    out = train_soft_prompt(settings, "bench", gguf=Path(spec["gguf"]), overrides=spec["overrides"], progress=False)
metrics = json.loads((out / "training_summary.json").read_text())["metrics"]
print("RESULT " + json.dumps({"train_s": metrics["duration_s"], "tokens": metrics["tokens_seen"],
                              "steps": metrics["steps"]}))
'''


def bootstrap(ratios: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean ratio and its 95 % bootstrap interval over rounds."""
    values = np.asarray(ratios, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n, len(values)), replace=True).mean(axis=1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def stream(client: httpx.Client, extra: dict, tokens: int) -> tuple[float, float]:
    """(TTFT s, decode tok/s after the first token) of one streamed greedy completion."""
    body = {"prompt": QUESTION, "max_tokens": tokens, "temperature": 0, "stream": True, "ignore_eos": True, **extra}
    started = time.perf_counter()
    first = None
    count = 0
    with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            count += 1
            first = first or time.perf_counter()
    end = time.perf_counter()
    return first - started, (count - 1) / (end - first)


def serving(url: str, rounds: int, tokens: int) -> dict:
    soft = {"soft_prompt": "bench"}
    bare = {"soft_prompt": False}
    rows = []
    with httpx.Client(base_url=url, timeout=600) as client:
        stream(client, soft, 4), stream(client, bare, 4)  # warm up; the soft prompt's KV is now cached in a slot
        for rnd in range(rounds):
            order = [("soft", soft), ("bare", bare)] if rnd % 2 == 0 else [("bare", bare), ("soft", soft)]
            got = {}
            for name, extra in order:
                got[name] = stream(client, extra, tokens)
                got[name + "_cold"] = stream(client, extra | {"cache_prompt": False}, 1)
            rows.append(got)
    return {"rows": rows}


def train_once(kind: str, spec: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", TRAIN, json.dumps(spec | {"kind": kind})], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{kind} training failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(line.removeprefix("RESULT "))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--train-rounds", type=int, default=2)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--virtual", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    from strata.kit.texts import corpus_texts
    from strata.kit.tiny_base import SPECS, make_tiny_base
    from strata.llamacpp import convert_hf
    from strata.serve.config import ServeConfig
    from strata.serve.server import serve_in_thread

    work = Path(tempfile.mkdtemp(prefix="strata-bench-sp-"))
    out = args.out or ROOT / "runs" / f"bench-softprompts-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    print(f"tiny base and GGUF under {work} ...", file=sys.stderr)
    base = make_tiny_base(work / "hf", corpus_texts(), SPECS["test"], pretrain_steps=60, seed=0)
    gguf = convert_hf(base, work / "base-f16.gguf", "f16")
    ws = work / "ws"
    (ws / "data" / "processed").mkdir(parents=True)
    rows = [{"text": t[i:i + 600], "topic": "kit"} for t in corpus_texts() for i in range(0, len(t), 600)][:40]
    (ws / "data" / "processed" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = {"epochs": 1.0, "max_seq_len": 128, "batch_size": 4, "grad_accum": 1, "save_steps": 100000,
              "eval_batches": 1}
    spec = {"workspace": str(ws), "base": str(base), "threads": args.threads, "gguf": str(gguf)}
    trains: dict[str, list[dict]] = {"soft": [], "lora": []}
    for rnd in range(args.train_rounds):
        for kind in (("soft", "lora") if rnd % 2 == 0 else ("lora", "soft")):
            overrides = common | ({"n_virtual_tokens": args.virtual, "lr": 3e-2} if kind == "soft" else {"lr": 2e-4})
            print(f"train round {rnd + 1}: {kind}", file=sys.stderr)
            trains[kind].append(train_once(kind, spec | {"overrides": overrides}))
    config = ServeConfig(model=gguf, n_ctx=512, n_threads=args.threads, n_batch=128, parallel=2, workspace=ws,
                         seed=0)
    print("serving rounds ...", file=sys.stderr)
    with serve_in_thread(config) as url:
        serve = serving(url, args.rounds, args.tokens)
    rows_ = serve["rows"]
    decode = bootstrap([r["soft"][1] / r["bare"][1] for r in rows_])
    ttft = bootstrap([r["soft_cold"][0] / r["bare_cold"][0] for r in rows_])
    extra_ms = [1000 * (r["soft_cold"][0] - r["bare_cold"][0]) for r in rows_]
    train = bootstrap([s["train_s"] / lo["train_s"] for s, lo in zip(trains["soft"], trains["lora"])])
    results = {"machine": "shared 2-core VM (other engineers' jobs running)", "rounds": args.rounds,
               "virtual_tokens": args.virtual, "tokens": args.tokens, "threads": args.threads,
               "serve_rows": rows_, "train": trains, "decode_ratio": decode, "ttft_cold_ratio": ttft,
               "prefill_extra_ms": extra_ms, "train_ratio": train}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    med = lambda xs: float(np.median(xs))  # noqa: E731
    table = [
        "| measure | with soft prompt | without | ratio (95 % CI) |", "|---|---|---|---|",
        f"| decode tok/s, 1 stream, {args.tokens} tokens (soft prompt KV cached) | "
        f"{med([r['soft'][1] for r in rows_]):.1f} | {med([r['bare'][1] for r in rows_]):.1f} | "
        f"{decode[0]:.3f} ({decode[1]:.3f}-{decode[2]:.3f}) |",
        f"| TTFT, prompt not cached (the {args.virtual} virtual tokens prefilled) | "
        f"{1000 * med([r['soft_cold'][0] for r in rows_]):.1f} ms | {1000 * med([r['bare_cold'][0] for r in rows_]):.1f} ms"
        f" | {ttft[0]:.3f} ({ttft[1]:.3f}-{ttft[2]:.3f}) |",
        f"| prefill cost of the {args.virtual} virtual tokens (TTFT difference, median) | "
        f"{med(extra_ms):.2f} ms | | |",
        f"| training, 1 epoch on {len(rows)} kit records (Trainer step time) | "
        f"{med([t['train_s'] for t in trains['soft']]):.2f} s ({args.virtual}-token soft prompt) | "
        f"{med([t['train_s'] for t in trains['lora']]):.2f} s (level-1 LoRA) | {train[0]:.3f} ({train[1]:.3f}-{train[2]:.3f}) |",
    ]
    text = "\n".join(table)
    (out / "results.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
