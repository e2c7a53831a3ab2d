"""Summarise raw bench results into medians and ratios, and write the Markdown table, JSON and bar chart."""

from __future__ import annotations

import json
import os
from pathlib import Path

from measure import median, percentile
from peers import LLAMA_CPP_PYTHON, LLAMA_SERVER, STRATA

PEERS = (STRATA, LLAMA_SERVER, LLAMA_CPP_PYTHON)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarise(raw: dict) -> dict:
    """Medians per peer, switch p50/p95, the bandwidth bound and each peer's fraction of it, and the ratios."""
    bound = raw["bandwidth"]["bandwidth_gbs"] * 1e9 / raw["model"]["weight_bytes_per_token"]
    peers = {}
    for name, data in raw["peers"].items():
        single = data.get("single", [])
        decode = median([s["decode_tps"] for s in single])
        switch = data.get("switch_id", [])
        peers[name] = {
            "decode_tps": decode,
            "ttft_ms": _scaled(median([s["ttft_s"] for s in single]), 1000),
            "tokens": sorted({s["tokens"] for s in single}),
            "samples": len(single),
            "bound_fraction": _ratio(decode, bound),
            "concurrent_tps": median([c["aggregate_tps"] for c in data.get("concurrent", [])]),
            "switch_p50_ms": _scaled(percentile(switch, 50), 1000) if switch else None,
            "switch_p95_ms": _scaled(percentile(switch, 95), 1000) if switch else None,
            "switch_path_p50_ms": _pct_ms(data.get("switch_path", []), 50),
            "first_load_s": median(data.get("first_load", [])),
            "reload_s": median(data.get("reload", [])),
            "start_s": median(data.get("start", [])),
            "errors": data.get("errors", []),
        }
    get = lambda peer, key: peers.get(peer, {}).get(key)  # noqa: E731
    ratios = {
        "decode_vs_llama_server": _ratio(get(STRATA, "decode_tps"), get(LLAMA_SERVER, "decode_tps")),
        "decode_vs_llama_cpp_python": _ratio(get(STRATA, "decode_tps"), get(LLAMA_CPP_PYTHON, "decode_tps")),
        "ttft_vs_llama_server": _ratio(get(STRATA, "ttft_ms"), get(LLAMA_SERVER, "ttft_ms")),
        "ttft_vs_llama_cpp_python": _ratio(get(STRATA, "ttft_ms"), get(LLAMA_CPP_PYTHON, "ttft_ms")),
        "concurrent_vs_llama_server": _ratio(get(STRATA, "concurrent_tps"), get(LLAMA_SERVER, "concurrent_tps")),
        "switch_p50_vs_llama_server": _ratio(get(STRATA, "switch_p50_ms"), get(LLAMA_SERVER, "switch_p50_ms")),
        "reload_llama_server_over_first_load": _ratio(get(LLAMA_SERVER, "reload_s"), get(STRATA, "first_load_s")),
        "reload_llama_cpp_python_over_first_load": _ratio(get(LLAMA_CPP_PYTHON, "reload_s"),
                                                          get(STRATA, "first_load_s")),
    }
    return {"bound_tps": bound, "peers": peers, "ratios": ratios}


def _scaled(value: float | None, factor: float) -> float | None:
    return value * factor if value is not None else None


def _pct_ms(values: list[float], q: float) -> float | None:
    return percentile(values, q) * 1000 if values else None


def _fmt(value, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and abs(value) < 10 ** -digits and value != 0:
        return f"{value:.2g}{suffix}"
    return f"{value:.{digits}f}{suffix}"


def markdown(raw: dict, summary: dict) -> str:
    """The results table plus the context a reader needs to reproduce it."""
    p, r = summary["peers"], summary["ratios"]
    cell = lambda peer, key, d=1, s="": _fmt(p.get(peer, {}).get(key), d, s) if peer in p else "not run"  # noqa: E731
    cfg, model, bw = raw["config"], raw["model"], raw["bandwidth"]
    rows = [
        ("Decode tok/s, 1 stream", "decode_tps", 2, "", _fmt(r["decode_vs_llama_server"], 2),
         _fmt(r["decode_vs_llama_cpp_python"], 2)),
        ("TTFT ms, 1 stream", "ttft_ms", 0, "", _fmt(r["ttft_vs_llama_server"], 2), _fmt(r["ttft_vs_llama_cpp_python"], 2)),
        ("Fraction of bandwidth bound", "bound_fraction", 2, "", "", ""),
        ("Aggregate tok/s, 4 concurrent streams", "concurrent_tps", 2, "", _fmt(r["concurrent_vs_llama_server"], 2), ""),
        ("Adapter switch p50 ms (POST /lora-adapters, id form)", "switch_p50_ms", 2, "",
         _fmt(r["switch_p50_vs_llama_server"], 2), ""),
        ("Adapter switch p95 ms", "switch_p95_ms", 2, "", "", ""),
        ("New adapter by path, s (strata: runtime load)", "first_load_s", 3, "", "", ""),
        ("New adapter by restart with --lora, s (stop + start until ready)", "reload_s", 2, "", "", ""),
        ("Start until ready, s", "start_s", 2, "", "", ""),
    ]
    head = (f"| Measure | {' | '.join(PEERS)} | strata ÷ llama-server | strata ÷ llama-cpp-python |\n"
            f"|---|{'---:|' * len(PEERS)}---:|---:|")
    lines = [head]
    for label, key, digits, suffix, ratio_ls, ratio_lcp in rows:
        cells = " | ".join(cell(peer, key, digits, suffix) for peer in PEERS)
        lines.append(f"| {label} | {cells} | {ratio_ls} | {ratio_lcp} |")
    tokens = {peer: p[peer]["tokens"] for peer in p}
    notes = [
        "",
        f"- Model: random-weight Llama ({model['spec']['model']['layers']} layers, hidden {model['spec']['model']['hidden']}), "
        f"{model['spec']['quant']}, {model['gguf_bytes'] / 1e6:.0f} MB GGUF; "
        f"{model['weight_bytes_per_token'] / 1e6:.0f} MB of weights read per decoded token.",
        f"- Memory bandwidth (numpy, {bw['threads']} threads): read {bw['read_gbs']:.1f} GB/s, copy (read + write) "
        f"{bw['copy_gbs']:.1f} GB/s; bound = {bw['bandwidth_gbs']:.1f} GB/s ÷ weight bytes per token = "
        f"{summary['bound_tps']:.1f} tok/s.",
        f"- {cfg['rounds']} interleaved rounds × {cfg['repeats']} streamed greedy completions of "
        f"{cfg['max_tokens']} tokens per peer (tokens actually generated: {tokens}); "
        f"{cfg['switches']} switches per round; threads {cfg['threads']}, n_ctx {cfg['n_ctx']}, flash attention off.",
        "- strata serves one request at a time (requests queue on one llama.cpp context); llama-server runs "
        "`-np 4` slots batched together. llama-cpp-python's server cannot switch or load adapters at runtime.",
        "- Reload = stop the server + start it again with the new `--lora` until it answers; strata loads the "
        "same file at runtime through `POST /lora-adapters` with its path.",
    ]
    if raw.get("machine"):
        m = raw["machine"]
        busy = max(m["loadavg_start"][0], m["loadavg_end"][0]) > m["cores"]
        notes.append(f"- Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gb']} GB RAM; load average "
                     f"{m['loadavg_start'][0]:.1f} at start, {m['loadavg_end'][0]:.1f} at end"
                     + (" (other jobs shared the CPU: absolute numbers are depressed)." if busy else "."))
    for peer, data in p.items():
        for error in data["errors"]:
            notes.append(f"- {peer}: {error}")
    notes += [f"- {note}" for note in raw.get("notes", [])]
    return "\n".join(lines + notes) + "\n"


def chart(summary: dict, dest: Path) -> None:
    """Four panels: decode tok/s (with the bandwidth bound), 4-stream aggregate, switch p50, new-adapter cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = summary["peers"]
    names = [n for n in PEERS if n in p]
    colors = {STRATA: "#2a7ab0", LLAMA_SERVER: "#e08a1e", LLAMA_CPP_PYTHON: "#6a9f3a"}
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))

    def bars(ax, items: list[tuple[str, float | None, str]], title: str, unit: str, log: bool = False) -> None:
        items = [(label, value, color) for label, value, color in items if value is not None]
        ax.bar([i[0] for i in items], [i[1] for i in items], color=[i[2] for i in items])
        for x, (_, value, _) in enumerate(items):
            ax.annotate(_fmt(value, 2), (x, value), ha="center", va="bottom", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        if log:
            ax.set_yscale("log")
        ax.tick_params(axis="x", labelsize=7, rotation=15)

    bars(axes[0], [(n, p[n]["decode_tps"], colors[n]) for n in names], "Decode, 1 stream", "tokens/s")
    axes[0].axhline(summary["bound_tps"], color="grey", linestyle="--", linewidth=1)
    axes[0].annotate("bandwidth bound", (0, summary["bound_tps"]), fontsize=7, color="grey", va="bottom")
    bars(axes[1], [(n, p[n]["concurrent_tps"], colors[n]) for n in names], "4 concurrent streams", "tokens/s")
    bars(axes[2], [(n, p[n]["switch_p50_ms"], colors[n]) for n in names], "Adapter switch p50", "ms", log=True)
    bars(axes[3], [("strata load by path", p.get(STRATA, {}).get("first_load_s"), colors[STRATA])]
         + [(f"{n} restart", p[n]["reload_s"], colors[n]) for n in names if n != STRATA],
         "New adapter", "seconds", log=True)
    fig.tight_layout()
    tmp = dest.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, dest)


def write(raw: dict, out_dir: Path) -> tuple[dict, str]:
    """Write results.json, results.md and results.png into out_dir (each atomically); return summary and table."""
    summary = summarise(raw)
    table = markdown(raw, summary)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("results.json", json.dumps({**raw, "summary": summary}, indent=2)), ("results.md", table)):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out_dir / name)
    chart(summary, out_dir / "results.png")
    return summary, table
