"""`strata qa`: run prompts through every adapter layer and blend, compare quality and latency."""

from __future__ import annotations

from pathlib import Path

import click

from strata.cli.common import friendly_errors, workspace_option
from strata.settings import Settings


@click.command()
@click.option("--server", metavar="URL", help="A running `strata serve` to drive over HTTP via /lora-adapters.")
@click.option("--model", type=click.Path(dir_okay=False), help="Base GGUF: start an in-process server on it and stop it "
              "after (default when no --server: MODEL_PATH).")
@click.option("--release", metavar="NAME@VERSION", help="Test a published release: pulled (verified) if needed, then "
              "its GGUF served in-process and its adapters compared (default layers: the release's).")
@click.option("--store", envvar="STRATA_STORE", metavar="DIR|s3://BUCKET/PREFIX",
              help="Release store for --release (env STRATA_STORE).")
@click.option("--layers", "layers", multiple=True, metavar="DIR",
              help="Adapter dir (or .gguf) to compare; repeat for each. Default: every dir under WORKSPACE/peft "
              "holding adapter.gguf, except merged/.")
@click.option("--blend", "blends", multiple=True, metavar="NAME=a:0.6,b:0.4",
              help="A blend to compare: layer names or paths with scales; repeat for more blends.")
@click.option("--soft-prompts", "all_soft_prompts", is_flag=True,
              help="Also compare every soft prompt under WORKSPACE/soft_prompts/ (each on the base, sent per request).")
@click.option("--soft-prompt", "soft_prompts", multiple=True, metavar="NAME|DIR",
              help="A soft prompt to compare (a name under WORKSPACE/soft_prompts/ or a dir); repeat for each.")
@click.option("--prompts", metavar="FILE.yaml", help="Prompt set (path or preset name; default presets/qa/asc.yaml).")
@click.option("--from-val", type=int, metavar="N", help="Use N held-out items from val.jsonl instead of --prompts "
              "(prompt = the question/heading, reference = the section text).")
@click.option("--max-tokens", type=int, default=64, show_default=True, help="Tokens generated per prompt.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed (generation is greedy).")
@click.option("--fail-under", "fail_under", multiple=True, metavar="METRIC[@LAYER]=VALUE",
              help="Gate for CI: exit 1 unless the best loaded non-base layer's mean METRIC (or LAYER's, with "
              "@LAYER) is >= VALUE. Metrics: exact_match, f1, rouge_l (0-1), bleu (0-100), tokens_per_s. Repeatable.")
@click.option("--api-key", envvar="API_KEY", help="Bearer key for the server (env API_KEY).")
@click.option("--grounded", is_flag=True, help="Grounded QA instead: each layer answers held-out questions with "
              "evidence (/gen/ask) and without (plain chat); reports answer F1, citation accuracy (the question's "
              "source chunk among the citations, its rank, and whether the answer cites it) and retrieval recall@k.")
@click.option("--questions", type=int, default=20, show_default=True, help="With --grounded: held-out questions "
              "(synthesized pairs_val.jsonl when present, else val.jsonl chunks).")
@click.option("--top-k", type=int, default=5, show_default=True, help="With --grounded: evidence chunks per answer.")
@click.option("--index", metavar="PATH|postgresql://...", help="With --grounded: evidence index of the in-process "
              "server (default WORKSPACE/index.sqlite).")
@click.option("--dry-run", is_flag=True, help="Print the plan (layers, blends, prompt count, requests) and send nothing.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@workspace_option
@friendly_errors
def qa(settings: Settings, server: str | None, model: str | None, release: str | None, store: str | None,
       layers: tuple[str, ...], blends: tuple[str, ...], all_soft_prompts: bool, soft_prompts: tuple[str, ...],
       prompts: str | None, from_val: int | None, max_tokens: int, seed: int, fail_under: tuple[str, ...],
       api_key: str | None, grounded: bool, questions: int, top_k: int, index: str | None, dry_run: bool,
       quiet: bool) -> None:
    """Compare the base model, every adapter layer and each blend on one prompt set: quality (exact match,
    token F1, ROUGE-L, BLEU, held-out perplexity) and latency (TTFT, tokens/s, total). Writes
    WORKSPACE/runs/qa-<timestamp>/ with results.json, report.md and report.html (with plots)."""
    from strata.errors import StrataError
    from strata.qa.harness import failed_gates, run_qa

    if grounded:
        from strata.qa.grounded import run_grounded

        run_grounded(settings, server=server, model=model, layers=layers, count=questions, top_k=top_k,
                     max_tokens=max_tokens, index=index, api_key=api_key, progress=not quiet, echo=click.echo)
        return
    label = None
    if release:
        if server or model:
            raise StrataError("--release serves the release's own GGUF: pass it without --server or --model.")
        from strata.qa.plan import discover_layers
        from strata.release.serving import prepare

        pulled = prepare(settings, release, store, progress=not quiet, echo=click.echo)
        model, label = str(pulled.model), pulled.label()
        layers = layers or tuple(str(d) for d in discover_layers(pulled.adapters))
    results = run_qa(settings, server=server, model=Path(model) if model else None, layers=list(layers) or None,
                     blends=blends, prompts=prompts, from_val=from_val, max_tokens=max_tokens, seed=seed,
                     fail_under=fail_under, api_key=api_key, dry_run=dry_run, progress=not quiet, echo=click.echo,
                     release=label, soft_prompts=None if all_soft_prompts else list(soft_prompts))
    failures = failed_gates(results)
    if failures:
        raise StrataError("QA gate failed: " + "; ".join(failures))
