"""The soak benchmark's verdict: growth after warm-up, for RSS and open file descriptors, against 5%.

The soak itself (10,000 frames, minutes) is not run here; benchmarks/README.md has its latest figures."""

from __future__ import annotations

from scenecap.benchmarks import soak


def test_growth_is_measured_from_the_first_sample_after_warm_up():
    # Start-up growth (before 500 frames) does not count; a steady 6% after it fails.
    leaking = [(250, 50_000), (500, 100_000), (1000, 103_000), (1500, 106_000)]
    g = soak.growth(leaking)
    assert (g["after_warmup_frame"], g["after_warmup"], g["end"], g["growth_pct"]) == (500, 100_000, 106_000, 6.0)
    assert g["pass"] is False
    flat = [(250, 50_000), (500, 100_000), (1000, 101_000), (1500, 100_500)]
    assert soak.growth(flat)["pass"] is True


def test_one_leaked_descriptor_in_twenty_fails_and_none_passes():
    assert soak.growth([(500, 20), (1000, 21)])["pass"] is False  # +5.0% is not < 5%
    assert soak.growth([(500, 20), (1000, 20), (10_000, 20)])["pass"] is True


def test_slope_is_per_thousand_frames_after_warm_up():
    samples = [(0, 0), (500, 1000), (1000, 1100), (1500, 1200)]
    assert abs(soak.slope_per_1000(samples) - 200.0) < 1e-6


def test_plot_writes_a_png(tmp_path):
    result = {"samples": [(500, 90_000, 10), (1000, 90_100, 10)], "frames_seen": 1000, "captions": 1000,
              "when": "all", "quant": {"encoder": "int8", "decoder_step": "int8"},
              "rss_kb": {"after_warmup": 90_000, "growth_pct": 0.11},
              "open_fds": {"after_warmup": 10, "growth_pct": 0.0}}
    soak.plot(result, tmp_path / "soak.png")
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
