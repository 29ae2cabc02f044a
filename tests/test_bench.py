"""`jaxgrad bench`: a smoke run of --quick, and one-line usage errors."""

import json

import pytest

from experiments.cli import main


@pytest.mark.slow
def test_quick_bench_writes_json_table_and_figure(tmp_path, capsys):
    code = main(["bench", "--quick", "--out", str(tmp_path), "--tag", "smoke", "--no-memory"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads((tmp_path / "smoke.json").read_text())
    for key in ("device", "machine", "versions", "settings", "configs", "baselines", "notes", "targets"):
        assert key in result
    assert {"cpu", "cores", "memory_gib"} <= set(result["machine"])
    assert {"jax", "jaxlib", "numpy", "python"} <= set(result["versions"])
    assert [(c["width"], c["depth"]) for c in result["configs"]] == [(8, 4), (8, 8)]
    for c in result["configs"]:
        e, lim = c["engine"], c["limit"]
        assert e["execute_s"] > 0 and e["compile_s"] > 0 and e["sample_layers_per_s"] > 0 and e["gflops"] > 0
        assert lim["total_s"] == pytest.approx(lim["draw_s"] + lim["products_s"])
        assert c["engine_over_limit"] == pytest.approx(e["execute_s"] / lim["total_s"])
        assert ("torch_limit" in c) == (result["versions"].get("torch") is not None)
    for b in result["baselines"]:
        assert b["depths"] == [1, 2, 3, 4, 5, 6, 7, 8]
        assert b["a"]["ratio"] > 0 and b["b"]["ratio"] > 0 and b["b"]["ratio_all_depths"] > 0
        # Equal work: the engine computing exactly what the baselines compute, and the ratios against it.
        equal = b["engine_equal"]
        assert equal["fields"] == ["log_spectral_norm"] and equal["norms_at"] == b["depths"]
        assert equal["samples_run"] == b["samples"] and equal["execute_s"] > 0
        assert b["b"]["ratio_equal"] == pytest.approx(b["b"]["seconds"] / equal["execute_s"])
    assert {"c_over_engine_equal", "b_over_engine_equal"} & set(result["targets"]) == (
        {"c_over_engine_equal", "b_over_engine_equal"} if "torch" in result["versions"] else {"b_over_engine_equal"}
    )
    table = (tmp_path / "smoke_table.md").read_text()
    assert table in out
    assert "engine ÷ limit" in table and "| 8 | 8 |" in table
    assert "engine, equal work s" in table and "**Equal work**" in table and "**Full work**" in table
    for ext in ("png", "pdf"):
        assert (tmp_path / f"throughput_smoke.{ext}").stat().st_size > 1000


@pytest.mark.parametrize(
    "argv, words",
    [
        (["bench", "--widths", "64,x"], ["--widths", "comma-separated integers"]),
        (["bench", "--depths", "0"], ["--depths", "positive"]),
        (["bench", "--repeats", "0"], ["--repeats must be a positive integer"]),
        (["bench", "--samples", "many"], ["--samples", "invalid int value"]),
        (["bench", "--frobnicate"], ["unrecognized arguments", "--frobnicate"]),
        (["bench", "--widths", "0,64"], ["--widths", "positive"]),
        (["bench", "--samples", "0"], ["--samples must be a positive integer"]),
        (["bench", "--tag", "tpu"], ["--tag tpu", "not the one here"]),
        (["bench", "--method", "vector"], ["--method vector", "log_spectral_norm", "equal-work", "--no-baselines"]),
        (["bench", "--method", "matrix_free"], ["--method matrix_free", "log_spectral_norm", "power or svd"]),
        (["bench", "--method", "lanczos"], ["--method", "invalid choice", "'lanczos'"]),
    ],
)
def test_bench_bad_flags_are_one_line_and_exit_code_2(capsys, argv, words):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("jaxgrad: error: ")
    for word in words:
        assert word in err


def test_targets_are_judged_at_every_width_against_that_widths_target():
    from benchmarks import bench

    configs = [
        dict(width=n, depth=d, engine_over_limit=r, memory=dict(peak_mb=m))
        for n, d, r, m in (
            (64, 64, 2.4, 100.0),
            (64, 1000, 1.3, 110.0),
            (128, 64, 1.9, 100.0),
            (128, 1000, 1.5, 130.0),
            (256, 64, 1.3, 100.0),
        )
    ]
    baselines = [
        dict(width=64, b=dict(ratio=1.0, ratio_all_depths=9.0, ratio_equal=2.1), c=dict(ratio=1.1, ratio_equal=2.5)),
        dict(width=128, b=dict(ratio=4.5, ratio_all_depths=9.0, ratio_equal=3.0), c=dict(ratio=0.9, ratio_equal=2.0)),
    ]
    t = bench.targets(dict(configs=configs, baselines=baselines))
    # Full work, engine ÷ limit: 2.4 meets n = 64's 2.5, 1.9 misses n = 128's 1.8, 1.3 meets n = 256's 1.4.
    assert t["engine_over_limit"]["by_width"] == {64: 2.4, 128: 1.9, 256: 1.3}
    assert t["engine_over_limit"]["met_by_width"] == {64: True, 128: False, 256: True}
    assert t["engine_over_limit"]["met"] is False
    # Equal work, (b): 2.1 meets n = 64's 2, but 3.0 misses n = 128's 4; torch.func: both >= 2.
    assert t["b_over_engine_equal"]["met_by_width"] == {64: True, 128: False}
    assert t["c_over_engine_equal"]["met"] is True
    assert t["b_over_engine"]["met"] is None and t["b_all_depths_over_engine"]["met"] is None  # reported only
    assert t["c_over_engine"]["met"] is None
    assert t["memory_deep_over_64"]["by_width"] == {64: pytest.approx(1.1), 128: pytest.approx(1.3)}
    assert not t["memory_deep_over_64"]["met"]
    text = bench._targets_text(t)
    assert "full work: engine ÷ limit: 2.4 ✓ (n = 64), 1.9 ✗ (n = 128), 1.3 ✓ (n = 256)" in text
    assert "target <= 2.5 (n <= 64), <= 1.8 (n = 128), <= 1.4 (n >= 256) — MISSED" in text
    assert "equal work: (c) torch.func ÷ engine: 2.5 ✓ (n = 64), 2 ✓ (n = 128); target >= 2 — met" in text


@pytest.mark.slow
def test_the_gpu_script_dry_run_prints_its_commands_and_checks_their_arguments():
    """benchmarks/gpu.sh --dry-run on CPU: the commands it would run, with arguments the CLI accepts."""
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(root))
    done = subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--dry-run"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("+ timeout")]
    assert any("pip install -q -e .[cuda,test]" in line for line in lines), lines
    assert any("jaxgrad bench --tag gpu --widths 128,256,512,1024" in line for line in lines), lines
    assert any("jaxgrad run depth_sweep --scale full" in line for line in lines), lines
    limits = [int(line.split()[2].rstrip("s")) for line in lines]
    assert sum(limits) <= 8 * 60  # every step is time-limited, and the limits add up to 8 minutes at most
    bad = subprocess.run(["bash", "benchmarks/gpu.sh", "--fast"], cwd=root, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument '--fast'" in bad.stderr


def test_the_committed_table_is_what_the_code_renders_from_the_committed_measurements():
    """results/benchmarks/cpu_table.md is `tables` + `_targets_text` of cpu.json: a change to the report's
    code re-renders it (`python -c` with those two functions), and a re-measurement commits both."""
    import pathlib

    from benchmarks import bench

    folder = pathlib.Path(__file__).resolve().parent.parent / "results" / "benchmarks"
    result = json.loads((folder / "cpu.json").read_text())
    assert json.loads(json.dumps(bench.targets(result))) == result["targets"]  # JSON keys are strings
    assert bench.tables(result) + bench._targets_text(result["targets"]) == (folder / "cpu_table.md").read_text()
