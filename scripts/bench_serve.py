#!/usr/bin/env python
"""Benchmark `strata serve` against one model: adapter switch latency, first load, tokens/s, full reload time.

Usage:
  python scripts/bench_serve.py --model M.gguf --lora A_DIR --lora B_DIR [--n-threads 8]
  python scripts/bench_serve.py            # no model given: builds a tiny base + two LoRAs with the kit
                                           # (needs torch/peft; cached under --workdir)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx


def make_kit_model(workdir: Path) -> tuple[Path, list[Path]]:
    """A tiny Llama GGUF plus two random LoRA adapter dirs (each with adapter.gguf), built once and cached."""
    base_gguf, adapters = workdir / "base-f16.gguf", [workdir / "lora_r8", workdir / "lora_r16"]
    if base_gguf.is_file() and all((a / "adapter.gguf").is_file() for a in adapters):
        return base_gguf, adapters
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from strata.kit.texts import corpus_texts
    from strata.kit.tiny_base import SPECS, make_tiny_base
    from strata.llamacpp import convert_hf, convert_lora

    hf = make_tiny_base(workdir / "hf", corpus_texts(), SPECS["demo"], pretrain_steps=20, seed=0, progress=True)
    convert_hf(hf, base_gguf, "f16")
    for rank, folder in zip((8, 16), adapters):
        torch.manual_seed(rank)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32),
                               LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False,
                                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
        model.save_pretrained(folder)
        convert_lora(folder, hf, folder / "adapter.gguf")
    return base_gguf, adapters


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed_post(client: httpx.Client, path: str, body: object) -> tuple[float, dict]:
    started = time.perf_counter()
    reply = client.post(path, json=body)
    elapsed = time.perf_counter() - started
    reply.raise_for_status()
    return elapsed, reply.json()


def bench_server(config, adapters: list[Path], switches: int, loads: int, gen: dict) -> dict[str, list[float]]:
    from strata.serve.server import serve_in_thread

    out: dict[str, list[float]] = {"switch": [], "first_load": [], "server_tps": []}
    scratch = Path(tempfile.mkdtemp(prefix="bench-load-", dir=adapters[0].parent))
    try:
        with serve_in_thread(config) as url, httpx.Client(base_url=url, timeout=600) as client:
            for adapter in adapters:  # load each once so switches are between loaded adapters
                timed_post(client, "/lora-adapters", {"adapters": [{"path": str(adapter), "scale": 1.0}]})
            for i in range(switches):
                body = {"adapters": [{"path": str(adapters[i % len(adapters)]), "scale": 1.0}]}
                out["switch"].append(timed_post(client, "/lora-adapters", body)[0])
            for i in range(loads):  # a new real path each time: a genuine first load from disk
                copy = scratch / f"copy{i}.gguf"
                shutil.copy(adapters[0] / "adapter.gguf", copy)
                out["first_load"].append(timed_post(client, "/lora-adapters", {"adapters": [{"path": str(copy)}]})[0])
            timed_post(client, "/lora-adapters", {"adapters": []})
            for _ in range(gen["runs"]):
                elapsed, reply = timed_post(client, "/v1/completions", gen["body"])
                out["server_tps"].append(reply["usage"]["completion_tokens"] / elapsed)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def bench_direct(config, gen: dict) -> dict[str, list[float]]:
    import llama_cpp

    out: dict[str, list[float]] = {"reload": [], "direct_tps": []}
    kwargs = dict(model_path=str(config.model), n_ctx=config.n_ctx, n_threads=config.n_threads, logits_all=True,
                  verbose=False)
    for _ in range(3):
        started = time.perf_counter()
        llm = llama_cpp.Llama(**kwargs)
        out["reload"].append(time.perf_counter() - started)
        llm.close()
    llm = llama_cpp.Llama(**kwargs)
    params = {k: v for k, v in gen["body"].items() if k != "model"}
    for _ in range(gen["runs"]):
        started = time.perf_counter()
        reply = llm.create_completion(**params)
        out["direct_tps"].append(reply["usage"]["completion_tokens"] / (time.perf_counter() - started))
    llm.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="base GGUF; default: build a tiny one with the kit (cached in --workdir)")
    parser.add_argument("--lora", action="append", default=[], help="adapter dir or .gguf (give two or more); "
                        "default: the kit's two random LoRAs")
    parser.add_argument("--workdir", default=str(Path.home() / ".cache" / "strata" / "bench_serve"),
                        help="where the kit model is built and cached")
    parser.add_argument("--n-threads", type=int, default=2, help="llama.cpp threads (default 2)")
    parser.add_argument("--n-ctx", type=int, default=1024, help="context length (default 1024)")
    parser.add_argument("--switches", type=int, default=50, help="adapter switches to time (default 50)")
    parser.add_argument("--loads", type=int, default=5, help="first loads by new path to time (default 5)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per generation (default 64)")
    parser.add_argument("--runs", type=int, default=3, help="generations per side for tokens/s (default 3)")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from strata.serve.config import ServeConfig

    if args.model:
        model, adapters = Path(args.model), [Path(p) for p in args.lora]
    else:
        model, adapters = make_kit_model(Path(args.workdir))
    if len(adapters) < 2:
        parser.error("give at least two --lora adapters to time switches between them")
    roots = sorted({str(a.resolve().parent) for a in adapters})
    config = ServeConfig(model=model, n_ctx=args.n_ctx, n_threads=args.n_threads, adapter_roots=roots)
    gen = {"runs": args.runs, "body": {"prompt": "Under ASC 842 a lessee", "max_tokens": args.max_tokens,
                                       "temperature": 0, "stop": [], "model": "local"}}
    results = {**bench_server(config, adapters, args.switches, args.loads, gen), **bench_direct(config, gen)}

    table = Table(title=f"strata serve benchmark: {model.name}, {args.n_threads} threads")
    for column in ("measure", "n", "p50", "p95", "unit"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    rows = [("switch between loaded adapters", "switch", 1000, "ms"),
            ("first load by path (+apply)", "first_load", 1000, "ms"),
            ("full model reload (Llama())", "reload", 1000, "ms"),
            ("tokens/s through the server", "server_tps", 1, "tok/s"),
            ("tokens/s llama-cpp-python direct", "direct_tps", 1, "tok/s")]
    for label, key, factor, unit in rows:
        values = [v * factor for v in results[key]]
        table.add_row(label, str(len(values)), f"{pct(values, 0.5):.2f}", f"{pct(values, 0.95):.2f}", unit)
    Console().print(table)
    print(f"server/direct tokens/s ratio: "
          f"{statistics.median(results['server_tps']) / statistics.median(results['direct_tps']):.2f}")


if __name__ == "__main__":
    main()
