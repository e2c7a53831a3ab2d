"""Pure helpers of scripts/bench: percentiles, the summary's medians/ratios/bound, the table, the arguments."""

from __future__ import annotations

import json

import pytest

import measure
import report
import run
from peers import LLAMA_CPP_PYTHON, LLAMA_SERVER, STRATA


def _sample(tps: float, ttft: float) -> dict:
    return {"decode_tps": tps, "ttft_s": ttft, "tokens": 32, "total_s": 1.0, "finish": "length"}


def _raw(peers: dict) -> dict:
    return {
        "bandwidth": {"read_gbs": 10.0, "copy_gbs": 8.0, "bandwidth_gbs": 10.0, "threads": 2, "array_mb": 64},
        "model": {"weight_bytes_per_token": 250_000_000, "gguf_bytes": 260_000_000,
                  "spec": {"model": {"layers": 10, "hidden": 2048}, "quant": "Q4_K_M"}},
        "config": {"rounds": 2, "repeats": 2, "max_tokens": 32, "switches": 4, "threads": 2, "n_ctx": 512,
                   "concurrent_tokens": 8, "long_tokens": 64},
        "peers": peers, "notes": ["llama-server not run: build failed"],
    }


def test_percentile_interpolates_and_handles_one_value():
    assert measure.percentile([4.0, 1.0, 3.0, 2.0, 5.0], 50) == 3.0
    assert measure.percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    assert measure.percentile([7.0], 95) == 7.0


def test_summary_takes_medians_ratios_and_the_bandwidth_bound():
    raw = _raw({
        STRATA: {"single": [_sample(30, 0.1), _sample(36, 0.3), _sample(32, 0.2)], "switch_id": [0.001, 0.003],
                 "first_load": [0.05, 0.07, 0.06], "concurrent_same": [{"aggregate_tps": 30}],
                 "concurrent_mixed": [{"aggregate_tps": 24}], "single_adapter": [_sample(20, 0.1)],
                 "long": [{"ratio": 1.02, "streamed_s": 10.2, "whole_s": 10.0}],
                 "chat": [{"ttft1_s": 0.4, "ttft2_s": 0.1}], "post_during_streams": [0.002, 0.004, 0.003],
                 "configs": {"strata": "--parallel 4"}},
        LLAMA_SERVER: {"single": [_sample(40, 0.1), _sample(40, 0.1)], "switch_id": [0.002, 0.002],
                       "reload": [3.0, 3.0], "concurrent_same": [{"aggregate_tps": 60}],
                       "concurrent_mixed": [{"aggregate_tps": 12}], "single_adapter": [_sample(25, 0.1)],
                       "chat": [{"ttft1_s": 0.5, "ttft2_s": 0.2}], "configs": {"ls-bare": "-np 1"}},
    })
    summary = report.summarise(raw)
    assert summary["bound_tps"] == pytest.approx(40.0)  # 10 GB/s / 250 MB per token
    strata = summary["peers"][STRATA]
    assert strata["decode_tps"] == 32 and strata["ttft_ms"] == pytest.approx(200)
    assert strata["bound_fraction"] == pytest.approx(0.8)
    assert strata["post_during_p50_ms"] == pytest.approx(3.0) and strata["chat_turn_ratio"] == pytest.approx(0.25)
    ratios = summary["ratios"]
    assert ratios["decode_vs_llama_server"] == pytest.approx(0.8)
    assert ratios["adapter_decode_vs_llama_server"] == pytest.approx(0.8)
    assert ratios["concurrent_same_vs_llama_server"] == pytest.approx(0.5)
    assert ratios["concurrent_mixed_vs_llama_server"] == pytest.approx(2.0)
    assert ratios["chat_ttft2_vs_llama_server"] == pytest.approx(0.5)
    assert ratios["reload_llama_server_over_first_load"] == pytest.approx(50.0)
    assert ratios["decode_vs_llama_cpp_python"] is None  # that peer did not run


def test_write_outputs_table_json_and_chart(tmp_path):
    raw = _raw({STRATA: {"single": [_sample(30, 0.1)], "switch_id": [0.001], "first_load": [0.05],
                         "concurrent_same": [{"aggregate_tps": 30}], "configs": {"strata": "--parallel 4"}}})
    summary, table = report.write(raw, tmp_path)
    assert (tmp_path / "results.md").read_text() == table
    assert json.loads((tmp_path / "results.json").read_text())["summary"]["peers"][STRATA]["decode_tps"] == 30
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "not run" in table and "llama-server not run: build failed" in table
    assert table.splitlines()[0].startswith("| Measure | strata serve | peer | peer's configuration")
    assert "strata's launch: --parallel 4" in table


def test_quick_and_peer_arguments():
    args = run.parse_args(["--quick", "--peers", "strata,llama-cpp-python"])
    assert (args.rounds, args.repeats, args.long_tokens) == (1, 1, 128)
    assert args.peers == [STRATA, LLAMA_CPP_PYTHON]
    with pytest.raises(SystemExit):
        run.parse_args(["--peers", "vllm"])
    with pytest.raises(SystemExit):
        run.parse_args(["--n-ctx", "512", "--long-tokens", "1024"])


def test_ratio_interval_brackets_the_ratio_of_medians_and_widens_with_noise():
    import stats

    steady = stats.ratio_interval([10.0, 10.0, 10.0], [20.0, 20.0, 20.0])
    assert steady == (0.5, 0.5, 0.5)
    mid, low, high = stats.ratio_interval([9.0, 10.0, 11.0, 14.0, 6.0], [20.0, 19.0, 21.0, 25.0, 15.0])
    assert mid == pytest.approx(0.5) and low < mid < high
    assert stats.ratio_interval([], [1.0]) is None and stats.ratio_interval([1.0], [0.0]) is None
    assert stats.fmt_interval((1.0, 0.9, 1.1)) == "1.00 [0.90, 1.10]"


def test_table_shows_intervals_and_the_parallel_1_rows(tmp_path):
    from peers import STRATA_NP1

    raw = _raw({STRATA: {"single": [_sample(30, 0.1), _sample(34, 0.1)], "configs": {"strata": "--parallel 4"}},
                STRATA_NP1: {"single": [_sample(40, 0.1), _sample(44, 0.1)],
                             "single_adapter": [_sample(30, 0.1)], "configs": {"strata-np1": "--parallel 1"}},
                LLAMA_SERVER: {"single": [_sample(40, 0.1), _sample(40, 0.1)], "single_adapter": [_sample(30, 0.1)],
                               "configs": {"ls-bare": "-np 1", "ls-adapter": "-np 1 --lora"}}})
    summary, table = report.summarise(raw), None
    assert summary["ratios"]["np1_decode_vs_llama_server"] == pytest.approx(1.05)
    low, high = summary["intervals"]["np1_decode_vs_llama_server"][1:]
    assert low <= 1.05 <= high
    table = report.markdown(raw, summary)
    assert "strata --parallel 1 vs llama-server -np 1 | 42.00 | 40.00" in table
    assert "1.05 [" in table and "0.80 [" in table
    report.write(raw, tmp_path)  # the chart has a colour for every peer (a real run crashed here on --parallel 1)
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
