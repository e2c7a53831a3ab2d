"""`strata demo`: the whole chain in an isolated workspace, on the kit's tiny model or on SmolLM2 from its wheel."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from strata.settings import Settings

Echo = Callable[[str], None]
# Sized for 2 CPU cores and the tiny model (short blocks, few steps, a higher lr so the adapters visibly learn);
# real runs use the level presets as they are.
QUICK_TRAINING = {"max_steps": 16, "max_seq_len": 256, "batch_size": 4, "grad_accum": 1, "lr": 1e-3}
# Topic layers: 100 steps at 2e-3 instead of the topic preset's budget. At 40 steps and 1e-3 the gate's trained-pair
# check found no layer better than the base on its own training pairs (it had not learned its data); at 100 x 2e-3
# each layer's held-out answers became much likelier as replies (README "Benchmark (measured 2026-12-05)").
TOPIC_TRAINING = {"max_steps": 100, "min_steps": 100, "lr": 2e-3}
# SmolLM2-135M on 2 cores: fewer, shorter steps at the presets' usual learning rate (a real model needs no push).
REAL_TRAINING = {"max_steps": 8, "max_seq_len": 256, "batch_size": 4, "grad_accum": 1, "lr": 2e-4, "eval_batches": 4}
REAL_TOPIC_TRAINING = {"max_steps": 40}  # SmolLM2's topic layers: the topic preset's budget capped, at its own 2e-4


@dataclass(frozen=True)
class DemoOptions:
    """How big the demo's model and training are; tests shrink them."""

    base: str = "tiny"  # "tiny": the kit's local Llama; "real": SmolLM2-135M-Instruct from its PyPI wheel
    base_size: str = "demo"
    pretrain_steps: int = 300
    training: dict[str, Any] = field(default_factory=lambda: dict(QUICK_TRAINING))
    topic_training: dict[str, Any] = field(default_factory=lambda: dict(TOPIC_TRAINING))
    qa_max_tokens: int = 32


def options_for(base: str) -> DemoOptions:
    """The demo's sizes for the kit's tiny base ("tiny") or SmolLM2 ("real", `strata demo --real`)."""
    if base == "real":
        return DemoOptions(base="real", training=dict(REAL_TRAINING), topic_training=dict(REAL_TOPIC_TRAINING),
                           qa_max_tokens=48)
    return DemoOptions()


@dataclass(frozen=True)
class Stage:
    """One demo step: `run(settings, options, echo)` returns a one-line outcome."""

    name: str
    run: Callable[[Settings, DemoOptions, Echo], str]


def _sample_pdfs(settings: Settings, options: DemoOptions, echo: Echo) -> str:
    from strata.kit.pdfs import write_sample_pdfs

    paths = write_sample_pdfs(settings.raw_pdfs, with_bad=True)
    return f"{len(paths)} PDFs in {settings.raw_pdfs} (good and bad)"


def _base_model(settings: Settings, options: DemoOptions, echo: Echo) -> str:
    base = Path(settings.base_model)
    if (base / "config.json").is_file():
        return f"reusing {base}"
    if options.base == "real":
        from strata.kit.real_base import PROVENANCE, make_real_base

        make_real_base(base, echo=echo)
        return f"SmolLM2-135M-Instruct at {base} ({PROVENANCE})"
    from strata.kit.texts import corpus_texts
    from strata.kit.tiny_base import SPECS, make_tiny_base

    # pre-trained on the kit corpus the sample PDFs are written from (the same text without their page layout), as
    # the tests' base and the quality benchmark's are
    make_tiny_base(base, corpus_texts(), SPECS[options.base_size],
                   pretrain_steps=options.pretrain_steps, progress=True)
    return f"tiny Llama base at {base}"


def _embedder(settings: Settings, options: DemoOptions, echo: Echo) -> str:
    from strata.kit.embedder import make_embedder

    return f"MiniLM GGUF embedder at {make_embedder(echo=echo)}"


def _train_all(settings: Settings, options: DemoOptions, echo: Echo) -> str:
    from strata.pipeline import run_all

    record = run_all(settings, per_topic=True, levels=(1, 2, 3), quant="Q4_K_M", train_overrides=options.training,
                     topic_overrides=options.topic_training,
                     echo=echo)
    gate = next((s for s in record["stages"] if s["name"] == "gate"), None)
    if gate and gate["status"] == "skipped" and gate.get("result"):  # a fresh gate printed its matrix as it ran
        from strata.qa.gate import format_matrix

        echo(format_matrix(gate["result"]))
    fid = next(s for s in record["stages"] if s["name"] == "convert")["result"]
    ppl = fid["perplexity"]
    return (f"{fid['model_path']}: F16 vs HF rel err {fid['relative_error']:.1e}, top-1 {fid['top1_agreement']:.2f}, "
            f"perplexity F16 {ppl['F16']:.1f} -> {fid['quant']} {ppl[fid['quant']]:.1f}; manifest {record['manifest']}")


def _topic_layers(settings: Settings) -> list[Path]:
    """Adapter dirs trained per topic (their summary names a topic): these sit on the served model."""
    from strata.qa.plan import discover_layers
    from strata.train.layers import read_summary

    return [d for d in discover_layers(settings.peft)
            if (read_summary(d) or {}).get("topic")]


def _serve_qa(settings: Settings, options: DemoOptions, echo: Echo) -> str:
    from strata.qa.harness import run_qa

    topics = _topic_layers(settings)
    blends = [f"blend={topics[0].name}:0.6,{topics[1].name}:0.4"] if len(topics) > 1 else []
    results = run_qa(settings, model=settings.model_path, layers=topics, blends=blends, max_tokens=options.qa_max_tokens, echo=echo)
    failed = [layer["name"] for layer in results["layers"] if layer["status"] != "ok"]
    note = f" ({len(failed)} layer(s) failed to load: {', '.join(failed)})" if failed else ""
    return f"QA report: {Path(results['report_dir']) / 'report.html'}{note}"


ASK = "When does a contract contain a lease?"


def _ask(settings: Settings, options: DemoOptions, echo: Echo) -> str:
    """`strata ask` on the built model and the evidence index (the answer, its citations, PDF and pages)."""
    from strata.cli.ask import format_reply
    from strata.qa.grounded import ask_once

    reply = ask_once(settings, {"prompt": ASK, "max_tokens": options.qa_max_tokens})
    echo(f"    strata ask {ASK!r}:")
    for line in format_reply(reply).splitlines():
        echo(f"      {line}")
    sources = sorted({c["source"] for c in reply["citations"]})
    return f"answer with {len(reply['citations'])} citations from {', '.join(sources) or 'no PDF'}"


STAGES: list[Stage] = [
    Stage("sample PDFs", _sample_pdfs),
    Stage("base model", _base_model),
    Stage("embedder (real base only)", _embedder),
    Stage("build train_all (pretest -> dataset -> index -> pairs -> levels -> topics -> merge -> GGUF -> gate "
          "-> archive)", _train_all),
    Stage("strata ask: a grounded answer with citations", _ask),
    Stage("serve + QA across topic layers and a blend", _serve_qa),
]


def stages_for(options: DemoOptions) -> list[Stage]:
    """The stages a demo runs: the embedder only with the real base (the tiny one has nothing to ground with)."""
    return [stage for stage in STAGES if options.base == "real" or stage.run is not _embedder]


def run_demo(workspace: Path, echo: Echo = print, options: DemoOptions = DemoOptions()) -> list[tuple[str, str]]:
    """Run every stage in order; returns (stage, outcome) rows. Only N_CTX and N_THREADS are taken from the
    environment: a pod's MODEL_PATH, BASE_MODEL or PDF_ARCHIVE_PATH must never receive the demo's tiny model."""
    settings = Settings.resolve(workspace=workspace, env={k: v for k, v in os.environ.items() if k in ("N_CTX", "N_THREADS")})
    settings.ensure_skeleton()
    echo(f"demo workspace: {settings.workspace}")
    rows = []
    stages = stages_for(options)
    for number, stage in enumerate(stages, 1):
        echo(f"[{number}/{len(stages)}] {stage.name} ...")
        started = time.monotonic()
        outcome = stage.run(settings, options, echo)
        rows.append((stage.name, outcome))
        echo(f"    {outcome} ({time.monotonic() - started:.1f}s)")
    return rows
