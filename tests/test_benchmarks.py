"""`scenecap bench --quick`, as CI runs it: every figure the benchmark promises is there and positive.

No timing is asserted (the machine is shared and timings are what the benchmark reports, not what tests judge).
The quick run measures the test suite's tiny model: its float32 and int8 bundles and, for the baselines, the
training run they came from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

STAGES = ("preprocess", "encoder", "step", "greedy", "beam")


def scenecap(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "scenecap", *args], capture_output=True, text=True, timeout=timeout)


def positive_summary(s: dict, runs: int, where: str) -> None:
    assert s["n"] == runs, where
    for k in ("p50", "p90", "p99", "mean", "min", "max"):
        assert s[k] > 0, f"{where} {k}"
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"], where


@pytest.fixture(scope="module")
def quick(tiny_run, float_bundle, int8_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    r = scenecap("bench", "--quick", "--synth-run", str(tiny_run), "--bundle", f"float32={float_bundle}",
                 "--bundle", f"int8={int8_bundle}", "--work", str(out / "work"), "--out", str(out / "results"))
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((out / "results" / "bench-quick.json").read_text(encoding="utf-8"))
    return results, out / "results", r.stdout


def test_every_latency_figure_is_present_and_positive(quick):
    results, _, _ = quick
    runs = results["options"]["runs"]
    lat = results["dims"]["synth"]["latency"]["1"]
    assert set(lat) == {"float32", "int8", "eager", "function"}
    for name, row in lat.items():
        for stage in STAGES:
            positive_summary(row["stages"][stage], runs, f"{name} {stage}")
        assert row["greedy_words"] > 0 and row["beam_words"] > 0
    for name in ("float32", "int8"):
        row = lat[name]
        for extra in ("step_invoke", "step_lone", "step_lone_invoke", "greedy_invokes", "greedy_overhead",
                      "greedy_overhead_pct", "beam_invokes",
                      "beam_overhead", "greedy_search_overhead", "beam_search_overhead"):
            positive_summary(row["stages"][extra], runs, f"{name} {extra}")
        for stage in ("greedy", "beam"):  # the search loop's part is part of the whole caption's overhead
            st = row["stages"]
            assert st[f"{stage}_search_overhead"]["p50"] < st[f"{stage}_overhead"]["p50"]
            assert 0 < st[f"{stage}_search_overhead_pct"]["p50"] < st[f"{stage}_overhead_pct"]["p50"]
        assert row["greedy_decoder_invokes"] == row["greedy_words"] + 1 or row["greedy_words"] == row["max_words"]
        assert row["runtime"] and row["device"] == "cpu"
        assert all(us > 0 for us in row["python_costs_us"].values())
        mr = row["memory_reads"]  # the decoder's fully read weights: every fc and attention matrix, not the table
        model = row["model"]
        fc_bytes = model.get("fc_units", model["units"]) * model["vocab_size"]  # fc2 alone, at one byte a weight
        assert fc_bytes < mr["step_weight_bytes"] < row["sizes"]["decoder_step.tflite"]
        assert mr["weights_gbps"] > 0 and mr["cache_gbps"] > 0
    assert lat["eager"]["params"] > 0 and lat["eager"]["runtime"].startswith("tensorflow")
    # the baselines run the very model the bundles were converted from: same input, same tokens
    assert lat["float32"]["greedy_tokens"] == lat["eager"]["greedy_tokens_edge_input"]
    assert lat["eager"]["greedy_tokens_edge_input"] == lat["function"]["greedy_tokens_edge_input"]


def test_sizes_memory_install_and_machine_are_reported(quick):
    results, _, _ = quick
    d = results["dims"]["synth"]
    for name in ("float32", "int8", "keras"):
        assert d["sizes"][name]["total"] > 0
    for name in ("float32", "int8"):
        assert d["sizes"][name]["encoder.tflite"] > 0 and d["sizes"][name]["decoder_step.tflite"] > 0
    for proc in ("edge", "tensorflow"):
        m = d["memory"][proc]
        for k in ("peak_rss_mb", "cold_start_s", "import_s", "load_s", "first_caption_s"):
            assert m[k] > 0, f"{proc} {k}"
    assert d["memory"]["edge"]["tensorflow_imported"] is False  # the edge process ran with TensorFlow blocked
    for env in ("train", "edge"):
        assert results["install"][env]["bytes"] > 0 and results["install"][env]["source"]
    m = results["machine"]
    assert m["cpu"] and m["cores"] > 0 and m["python"] and m["libraries"]["numpy"] and m["libraries"]["tensorflow"]
    # what decides the int8 rows: every x86-64 CPU TensorFlow 2.21 runs on has AVX2, and its cache sizes are listed
    assert "avx2" in m["cpu_features"] or m["machine"] != "x86_64"
    assert m["caches"].get("L1d") or not Path("/sys/devices/system/cpu/cpu0/cache").exists()


def test_targets_are_ratios_from_the_same_run(quick):
    results, _, _ = quick
    targets = {t["target"]: t for t in results["targets"]}
    assert set(targets) == {"speedup", "overhead", "search_overhead", "beam_overhead", "beam_search_overhead", "size",
                            "memory"}
    for t in targets.values():
        assert t["measured"] > 0 and t["limit"] > 0 and isinstance(t["met"], bool) and t["detail"]
        assert t["met"] or (t["missed_by"] and t["why"])
    lat = results["dims"]["synth"]["latency"]["1"]
    assert targets["speedup"]["measured"] == pytest.approx(
        lat["eager"]["stages"]["greedy"]["p50"] / lat["int8"]["stages"]["greedy"]["p50"])
    assert targets["beam_overhead"]["measured"] == lat["int8"]["stages"]["beam_overhead_pct"]["p50"]
    for stage in ("", "beam_"):  # the search loop's share: part of the whole caption's overhead, same limits
        search, whole = targets[f"{stage}search_overhead"], targets[f"{stage}overhead"]
        assert 0 < search["measured"] < whole["measured"] and search["limit"] == whole["limit"]
    assert (targets["overhead"]["limit"], targets["beam_overhead"]["limit"]) == (5.0, 15.0)


def test_markdown_table_and_chart_are_written(quick):
    results, folder, stdout = quick
    md = (folder / "bench-quick.md").read_text(encoding="utf-8")
    assert "| naive eager Keras | 1 |" in md and "| int8 | 1 |" in md and "## Targets" in md
    assert results["machine"]["cpu"] in md
    assert "Vector extensions for int8: " in md and "Caches: " in md  # the machine line says what int8 runs on
    assert md in stdout  # the table is printed too
    png = (folder / "bench-quick.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_bench_help_explains_with_examples():
    r = scenecap("bench", "--help")
    assert r.returncode == 0 and "scenecap bench --quick" in r.stdout and "Raspberry Pi" in r.stdout


@pytest.mark.parametrize("args, expected", [
    (["--bundle", "no/such/bundle"], "no/such/bundle: no manifest.json"),
    (["--threads", "0"], "--threads [0]"),
    (["--dims", "huge"], "--dims huge unknown"),
])
def test_bad_options_are_one_line_errors(tmp_path, args, expected):
    r = scenecap("bench", "--quick", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"), *args)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("scenecap: error")]
    assert len(lines) == 1 and expected in lines[0], r.stderr[-2000:]
    assert not (tmp_path / "o").exists()


def _bench_args(*argv: str):
    from scenecap.cli import build_parser

    return build_parser().parse_args(["bench", *argv])


def test_help_names_the_variants_that_run_and_quick_runs_stay_out_of_the_committed_results():
    from scenecap.benchmarks.artefacts import CPU_VARIANTS
    from scenecap.benchmarks.bench import default_variants
    from scenecap.benchmarks.cli import bench_options

    r = scenecap("bench", "--help")
    assert r.returncode == 0
    # argparse may break the list at a hyphen (int8- int16x8): compare without the white space
    assert f"(default{','.join(CPU_VARIANTS)},plusedgetpu" in "".join(r.stdout.split())
    assert default_variants(False) == list(CPU_VARIANTS) and default_variants(True)[-1] == "edgetpu"
    quick, full = bench_options(_bench_args("--quick")), bench_options(_bench_args())
    assert (quick.out, quick.name) == ("reports/bench-quick", "bench-quick")
    assert full.out == "benchmarks/results"
    assert bench_options(_bench_args("--quick", "--out", "elsewhere")).out == "elsewhere"
    ignored = subprocess.run(["git", "check-ignore", "-q", "reports/bench-quick/bench-quick.json"],
                             cwd=Path(__file__).resolve().parents[1], capture_output=True)
    if ignored.returncode != 128:  # 128: not a git checkout (an unpacked sdist): nothing to ignore
        assert ignored.returncode == 0, "reports/ is not ignored by git"


def test_every_variant_in_the_chart_has_its_own_colour():
    """The recommended int8-dynamic variant, int8-int16x8, the baselines and named --bundle variants never share a
    colour."""
    from scenecap.benchmarks.publish import ORDER, chart_colour, colour_index

    names = [*ORDER, "mine", "theirs"]
    assert len({chart_colour(colour_index(n, names)) for n in names}) == len(names)


def _overhead_row(log_norm: bool | None, decoder: str = "dynamic") -> dict:
    """One variant's latency entry as the edge worker writes it, with made-up figures: a caption over the limit."""
    stat = lambda p50: {"n": 3, "p50": p50}  # noqa: E731
    costs = {"read_outputs": 4.0, "write_inputs": 3.0, "argmax": 5.0, "top_k": 17.0,
             **({"log_prob": 1.0} if log_norm else {"log_sum_exp": 30.0})}
    row = {"quant": {"encoder": "int8", "decoder_step": decoder}, "greedy_decoder_invokes": 46,
           "python_costs_us": costs,
           "stages": {"greedy_overhead_pct": stat(9.0), "greedy_overhead": stat(3.0), "greedy_invokes": stat(30.0),
                      "greedy": stat(33.0), "preprocess": stat(0.3), "step": stat(0.5), "step_invoke": stat(0.4)}}
    if log_norm is not None:  # results from before log_norm do not say
        row["log_norm"] = log_norm
    return row


@pytest.mark.parametrize("log_norm", [True, False, None])
def test_the_overhead_target_says_where_the_log_sum_exp_runs(log_norm):
    from scenecap.benchmarks.targets import _overhead

    t = _overhead("original", "1", {"int8-dynamic": _overhead_row(log_norm)}, "int8-dynamic")
    assert not t["met"] and t["why"]
    if log_norm:
        assert "the word's logit minus the graph's log_norm 1 us" in t["detail"]
        assert "runs inside the decoder invoke (its log_norm output)" in t["detail"]
        assert "log-sum-exp over the vocabulary (" not in t["why"] and "to_close" not in t
        assert t["figures"]["log_norm_in_graph"] is True
    elif log_norm is False:
        assert "a log-sum-exp over the vocabulary (30 us)" in t["why"] and "runs in numpy every word" in t["detail"]
        assert "re-export and re-convert" in t["to_close"] and t["figures"]["log_norm_in_graph"] is False
    else:
        assert "log_norm" not in t["detail"] and "log_norm_in_graph" not in t["figures"]


def test_an_integer_decoder_without_log_norm_is_not_told_to_re_export():
    from scenecap.benchmarks.targets import _overhead

    t = _overhead("original", "1", {"int8": _overhead_row(False, decoder="int8")}, "int8")
    assert "runs in numpy every word" in t["detail"] and "to_close" not in t


def test_a_step_that_reads_its_weights_for_most_of_its_time_is_called_memory_bound():
    from scenecap.benchmarks.targets import memory_bound

    variant = {"memory_reads": {"step_weight_bytes": 15_000_000, "weights_gbps": 10.0, "cache_gbps": 30.0,
                                "cache_probe_bytes": 1 << 20}}
    why = memory_bound(variant, 1.7, threads=1)  # 15 MB at 10 GB/s: 1.5 of 1.7 ms
    assert "bound by memory" in why and "15.0 MB" in why and "1.50 of the step's 1.70 ms" in why
    assert memory_bound(variant, 5.0, threads=1) == ""  # reading takes 30% of the step: arithmetic, not memory
    assert memory_bound(variant, 1.7, threads=2) == ""  # the probe reads with one core
    assert memory_bound({}, 1.7, threads=1) == ""  # results from before the probe


def test_a_vocab_limited_bundle_is_judged_against_the_eager_loop_with_every_id():
    """`scenecap bench --vocab-limit 4000` measures int8-dynamic-vocab4000 beside the full bundles; its target is
    the ratio to the same run's naive eager loop (the replaced system, every id), at 1 thread only."""
    from scenecap.benchmarks.artefacts import vocab_limited_name
    from scenecap.benchmarks.targets import _latency_targets

    def stat(p50):
        return {"p50": p50}

    def variant(greedy, encoder):
        return {"stages": {"greedy": stat(greedy), "encoder": stat(encoder), "step": stat(0.07)}, "greedy_words": 46}

    name = vocab_limited_name("int8-dynamic", 4000)
    row = {"int8-dynamic": variant(18.6, 5.7), name: variant(9.0, 5.7), "eager": variant(612.0, 114.0)}
    out = {t: [x for x in _latency_targets("original", {"original": {"latency": {t: row}}})
               if x["target"] == "vocab_speedup"] for t in ("1", "2")}
    assert out["2"] == []  # the issue states it at 1 thread
    (t,) = out["1"]
    assert t["title"].startswith(name) and t["measured"] == pytest.approx(68.0) and t["met"]
    assert "int8-dynamic with every id 18.6 ms" in t["detail"]
    row[name] = variant(12.5, 5.7)  # 49x: 1.23x short, and the encoder is why
    (t,) = [x for x in _latency_targets("original", {"original": {"latency": {"1": row}}})
            if x["target"] == "vocab_speedup"]
    assert not t["met"] and "1.23x short" in t["missed_by"] and "46% of a caption" in t["why"]


def test_a_work_folder_converts_its_bundles_again_after_a_converter_change(tiny_export, tmp_path):
    """A bench reuses a work folder's bundles (the slow conversions happen once) until the converter's code
    changes: then it measures what `scenecap convert` now writes, not what an older one wrote."""
    from scenecap.benchmarks.artefacts import CONVERTER_STAMP, converter_code, ensure_variants

    folder = tmp_path / "set"
    ensure_variants(folder, tiny_export, ["float32"], None, 8)
    stamp, marker = folder / "bundles" / CONVERTER_STAMP, folder / "bundles" / "float32" / "seen"
    assert stamp.read_text(encoding="utf-8").strip() == converter_code()
    marker.touch()
    ensure_variants(folder, tiny_export, ["float32"], None, 8)
    assert marker.exists(), "same converter: the bundle is reused"
    stamp.write_text("another converter\n", encoding="utf-8")
    ensure_variants(folder, tiny_export, ["float32"], None, 8)
    assert not marker.exists() and (folder / "bundles" / "float32" / "manifest.json").is_file()
    assert stamp.read_text(encoding="utf-8").strip() == converter_code()
