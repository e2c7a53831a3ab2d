"""Training throughput: the Trainer path (this checkout) against the hand-written loop it replaced (from git).

The old loop is not kept in strata/: this script checks REF (default: OLD_LOOP, the last commit with the old
loop; any commit that still has strata/build/checkpoints.py works) out into a temporary git worktree and runs
it from there. Both sides train level 1
on the same kit data, tiny base, preset, steps and threads, interleaved A B B A ... in one run (the machine is
shared, so only ratios taken side by side mean anything). Each run is its own process.

    .venv/bin/python scripts/bench_train.py [--ref COMMIT] [--rounds 3] [--steps 30] [--size demo] [--threads 1]

Reported per side: training tokens/s (non-padding tokens over the time spent in optimiser steps, as each
training_summary.json records it), wall time of the whole `train_level` call, and the held-out loss after the
run, re-evaluated for both adapters by one evaluator (token-weighted mean, the same blocks) so the two
definitions of eval loss in the summaries do not blur the comparison. Each round uses its own seed, so the
spread across rounds is the noise the eval-loss difference is judged against.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_LOOP = "9e51947967b6f6130be9d6c0eebf57193e6691f5"  # main before the Trainer replaced strata's own training loop

WORKER = r'''
import json, sys, time
from pathlib import Path
from strata.settings import Settings
try:
    from strata.train.trainer import train_level
except ImportError:  # the old tree: from before strata/build was split into data/train/export
    from strata.build.train import train_level
spec = json.loads(sys.argv[1])
settings = Settings.resolve(workspace=spec["workspace"], base_model=spec["base"], n_threads=spec["threads"])
began = time.perf_counter()
(out,) = train_level(settings, 1, overrides=spec["overrides"], progress=False)
wall = time.perf_counter() - began
metrics = json.loads((out / "training_summary.json").read_text())["metrics"]
print("RESULT " + json.dumps({"wall_s": wall, "tokens_per_s": metrics["tokens_per_s"], "steps": metrics["steps"],
                              "eval_loss_recorded": metrics["eval_loss_after"], "adapter": str(out)}))
'''

EVAL = r'''
import json, sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from strata.train.batches import build_blocks
spec = json.loads(sys.argv[1])
tok = AutoTokenizer.from_pretrained(spec["base"])
val = [json.loads(l) for l in open(spec["val"]) if l.strip()]
blocks = build_blocks(val, tok, "text", spec["max_seq_len"])[: spec["n_blocks"]]
losses = {}
for adapter in spec["adapters"]:
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(spec["base"], dtype=torch.float32), adapter)
    model.eval()
    total = count = 0
    with torch.no_grad():
        for b in blocks:
            ids = torch.tensor([b.input_ids])
            n = len(b.input_ids) - 1
            total += model(input_ids=ids, labels=ids).loss.item() * n
            count += n
    losses[adapter] = total / count
print("RESULT " + json.dumps(losses))
'''


def _records() -> tuple[list[dict], list[dict]]:
    """Kit corpus paragraphs as text records, every 6th held out."""
    from strata.kit.texts import CORPUS_DIR

    records = []
    for path in sorted(CORPUS_DIR.glob("*.md")):
        for n, block in enumerate(re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))):
            if len(block.strip()) >= 200 and not block.startswith("#"):
                records.append({"id": f"{path.stem}-{n}", "text": block.strip(), "topic": path.stem})
    return [r for i, r in enumerate(records) if i % 6 != 5], [r for i, r in enumerate(records) if i % 6 == 5]


def _run(code: str, spec: dict, pythonpath: Path) -> dict:
    env = os.environ | {"PYTHONPATH": str(pythonpath), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], env=env, capture_output=True, text=True,
                          cwd=pythonpath)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"run failed ({pythonpath}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default=OLD_LOOP, help="git commit with the old hand-written loop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", default="demo", choices=["test", "demo"], help="kit tiny-base size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args()
    args.load = os.getloadavg()[0]

    from strata.kit.texts import corpus_texts
    from strata.kit.tiny_base import SPECS, make_tiny_base

    tmp = Path(tempfile.mkdtemp(prefix="strata-bench-train-"))
    old_tree = tmp / "old"
    try:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), args.ref], check=True,
                       capture_output=True)
        if not (old_tree / "strata/build/checkpoints.py").is_file():
            raise SystemExit(f"{args.ref} does not hold the old hand-written loop (no strata/build/checkpoints.py)")
        base = make_tiny_base(tmp / "base", corpus_texts(), SPECS[args.size], pretrain_steps=20, seed=0)
        train, val = _records()
        overrides = {"max_steps": args.steps, "max_seq_len": 256, "batch_size": 4, "grad_accum": 1, "lr": 1e-3,
                     "save_steps": 10_000, "eval_batches": 4}
        sides = {"old loop": old_tree, "Trainer": ROOT}
        results: dict[str, list[dict]] = {name: [] for name in sides}
        for round_ in range(args.rounds):
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for name in order:
                ws = tmp / f"ws-{name.replace(' ', '_')}-{round_}"
                processed = ws / "data" / "processed"
                processed.mkdir(parents=True)
                for file, rows in (("train.jsonl", train), ("val.jsonl", val)):
                    (processed / file).write_text("".join(json.dumps(r) + "\n" for r in rows))
                spec = {"workspace": str(ws), "base": str(base), "threads": args.threads,
                        "overrides": overrides | {"seed": 42 + round_}}
                result = _run(WORKER, spec, sides[name])
                results[name].append(result)
                print(f"round {round_ + 1} {name:9s}: {result['tokens_per_s']:8.0f} tok/s, wall "
                      f"{result['wall_s']:.1f}s", flush=True)
        adapters = [r["adapter"] for rows in results.values() for r in rows]
        losses = _run(EVAL, {"base": str(base), "val": str(tmp / "ws-Trainer-0/data/processed/val.jsonl"),
                             "max_seq_len": 256, "n_blocks": 16, "adapters": adapters}, ROOT)
        for rows in results.values():
            for row in rows:
                row["eval_loss"] = losses[row["adapter"]]
        table = _table(results, args)
        print(table)
        if args.out:
            args.out.write_text(table + "\n")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _table(results: dict[str, list[dict]], args: argparse.Namespace) -> str:
    med = {name: {k: statistics.median(r[k] for r in rows) for k in ("tokens_per_s", "wall_s")}
           for name, rows in results.items()}
    loss = {name: [r["eval_loss"] for r in rows] for name, rows in results.items()}
    old, new = med["old loop"], med["Trainer"]
    lines = [f"level-1 training, kit base `{args.size}`, {args.steps} steps of 4x256 tokens, {args.threads} thread(s), "
             f"{args.rounds} interleaved rounds (seeds 42..{41 + args.rounds})", "",
             "| side | tokens/s (median) | wall s (median) | eval loss after (mean ± sd) |", "|---|---|---|---|"]
    for name in results:
        sd = statistics.stdev(loss[name]) if len(loss[name]) > 1 else 0.0
        lines.append(f"| {name} | {med[name]['tokens_per_s']:.0f} | {med[name]['wall_s']:.1f} | "
                     f"{statistics.mean(loss[name]):.4f} ± {sd:.4f} |")
    paired = [n["tokens_per_s"] / o["tokens_per_s"] for o, n in zip(results["old loop"], results["Trainer"])]
    lines += ["", f"Trainer / old loop: tokens/s x{new['tokens_per_s'] / old['tokens_per_s']:.3f}, "
                  f"wall time x{new['wall_s'] / old['wall_s']:.3f}; eval loss difference "
                  f"{statistics.mean(loss['Trainer']) - statistics.mean(loss['old loop']):+.4f}",
              "tokens/s ratio per round: " + ", ".join(f"{r:.3f}" for r in paired) +
              f"; load average at the start {args.load:.1f}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
