"""Quality benchmark for the build's training data: the per-topic base-vs-layer matrix with the old "Explain
<heading> (<topic>)" chat data against the synthesized question/answer pairs, same steps and seeds, on the kit
corpus and the demo base; plus synthesis throughput (pairs/s) of the in-process teacher."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from strata.settings import Settings  # noqa: E402

VARIANTS = ("explain", "pairs")
QUICK = {"max_steps": 16, "max_seq_len": 256, "batch_size": 4, "grad_accum": 1, "lr": 1e-3}  # the demo's


def base_model(root: Path, size: str, pretrain_steps: int) -> Path:
    from strata.kit.texts import corpus_texts
    from strata.kit.tiny_base import SPECS, make_tiny_base

    dest = root / f"base-{size}-{pretrain_steps}"
    if not (dest / "config.json").is_file():
        make_tiny_base(dest, corpus_texts(), SPECS[size], pretrain_steps=pretrain_steps, seed=0, progress=False)
    return dest


def prepared(root: Path, base: Path) -> Settings:
    """One workspace with the kit PDFs pretested, chunked and synthesized (extractive), shared by every run."""
    from strata.data.dataset import build_dataset
    from strata.data.pretest import run_pretest
    from strata.data.synthesis import synthesize
    from strata.kit.pdfs import write_sample_pdfs

    settings = Settings.resolve(workspace=root / "data", base_model=str(base), env={}, n_threads=2)
    if not settings.pairs_val_jsonl.is_file():
        settings.ensure_skeleton()
        write_sample_pdfs(settings.raw_pdfs)
        run_pretest(settings)
        build_dataset(settings)
        synthesize(settings, generator="extractive", progress=False)
    return settings


def one_run(data: Settings, root: Path, variant: str, seed: int, topic_steps: int, level_steps: int) -> dict:
    """Levels 1-3 + topic layers on `variant`'s data (explain: no pairs_train, so the chat levels read the old
    Explain records), merge, convert, gate on the same held-out pairs."""
    from strata.export.convert import convert_model
    from strata.export.merge import merge_levels
    from strata.train.trainer import train_level
    from strata.qa.gate import run_gate

    settings = Settings.resolve(workspace=root / f"{variant}-seed{seed}", base_model=data.base_model, env={},
                                n_threads=2)
    shutil.rmtree(settings.workspace, ignore_errors=True)
    settings.ensure_skeleton()
    for name in ("train.jsonl", "val.jsonl", "pairs_train.jsonl", "pairs_val.jsonl"):
        shutil.copy(data.processed / name, settings.processed / name)
    if variant == "explain":
        settings.pairs_train_jsonl.unlink()
    started = time.monotonic()
    for level in (1, 2, 3):
        train_level(settings, level, overrides=QUICK | {"seed": seed, "max_steps": level_steps}, progress=False,
                    check=False)
    topic = {k: v for k, v in QUICK.items() if k not in ("max_steps",)} | {"seed": seed, "min_steps": topic_steps,
                                                                            "max_steps": topic_steps}
    train_level(settings, 4, per_topic=True, preset="levels/topic", overrides=topic, progress=False, check=False)
    merge_levels(settings, [1, 2, 3], echo=lambda _: None)
    convert_model(settings, echo=lambda _: None)
    gate = run_gate(settings, progress=False, echo=lambda _: None)
    return {"variant": variant, "seed": seed, "seconds": round(time.monotonic() - started, 1), "gate": gate}


def teacher_throughput(data: Settings, root: Path, chunks: int) -> dict:
    """pairs/s of the llm generator with the in-process teacher (the demo base as F16 GGUF, 4 slots)."""
    from strata.data.synthesis import synthesize

    settings = Settings.resolve(workspace=root / "teacher", base_model=data.base_model, env={}, n_threads=2)
    shutil.rmtree(settings.workspace, ignore_errors=True)
    settings.ensure_skeleton()
    for name in ("train.jsonl", "val.jsonl"):
        shutil.copy(data.processed / name, settings.processed / name)
    preset = root / "teacher.yaml"
    preset.write_text("teacher_pairs: 4\nteacher_max_tokens: 900\n")
    try:
        summary = synthesize(settings, preset=str(preset), generator="llm", limit=chunks, progress=False)
    except Exception as exc:  # noqa: BLE001 - a tiny teacher may keep nothing; report the requests anyway
        return {"error": str(exc)}
    return {k: summary[k] for k in ("chunks", "pairs", "seconds", "pairs_per_s", "requests", "rejected")}


def ppl_drop(gate: dict, verdict: dict) -> float:
    """Relative drop of the held-out answers' perplexity on the layer's own topic, layer vs base (> 0: better)."""
    base = gate["matrix"]["base"][verdict["topic"]]["perplexity"]
    return (base - gate["matrix"][verdict["layer"]][verdict["topic"]]["perplexity"]) / base


def table(runs: list[dict]) -> str:
    """Markdown: per variant, mean (min-max over seeds) own-topic F1 of base and layers, gain, layers passed."""
    lines = ["| data | seeds | base F1 (own topics) | topic layer F1 (own topic) | gain | own-topic perplexity drop | "
             "layers beating the base's perplexity | layers passing the gate | general ppl ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
            continue
        def spread(values: list[float]) -> str:
            return f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"
        verdicts = [v for r in mine for v in r["gate"]["verdicts"].values()]
        base = [statistics.mean(v["base_f1"] or 0 for v in r["gate"]["verdicts"].values()) for r in mine]
        own = [statistics.mean(v["own_f1"] or 0 for v in r["gate"]["verdicts"].values()) for r in mine]
        gain = [statistics.mean((v["own_f1"] or 0) - (v["base_f1"] or 0) for v in r["gate"]["verdicts"].values()) for r in mine]
        ratio = [statistics.mean(v["general_ppl_ratio"] or 0 for v in r["gate"]["verdicts"].values()) for r in mine]
        drops = [[ppl_drop(r["gate"], v) for v in r["gate"]["verdicts"].values()] for r in mine]
        lines.append(f"| {variant} | {len(mine)} | {spread(base)} | {spread(own)} | {spread(gain)} | "
                     f"{spread([statistics.mean(d) for d in drops])} | {sum(x > 0 for d in drops for x in d)}/"
                     f"{len(verdicts)} | {sum(v['passed'] for v in verdicts)}/{len(verdicts)} | {spread(ratio)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=REPO / "bench-quality")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--size", default="demo", help="tiny base spec (strata.kit.tiny_base.SPECS)")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--topic-steps", type=int, default=40)
    parser.add_argument("--level-steps", type=int, default=QUICK["max_steps"])
    parser.add_argument("--teacher-chunks", type=int, default=8)
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    data = prepared(args.root, base_model(args.root, args.size, args.pretrain_steps))
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for variant in VARIANTS:  # interleaved: both variants of a seed run back to back on the same machine state
            runs.append(one_run(data, args.root, variant, seed, args.topic_steps, args.level_steps))
            print(f"{variant} seed {seed}: {runs[-1]['seconds']} s, gate passed {runs[-1]['gate']['passed']}",
                  flush=True)
    throughput = teacher_throughput(data, args.root, args.teacher_chunks)
    result = {"runs": runs, "teacher": throughput, "table": table(runs), "size": args.size,
              "pretrain_steps": args.pretrain_steps, "topic_steps": args.topic_steps, "level_steps": args.level_steps,
              "levels_training": QUICK}
    (args.root / "quality.json").write_text(json.dumps(result, indent=2, default=str))
    print(result["table"])
    print("teacher:", json.dumps(throughput))


if __name__ == "__main__":
    main()
