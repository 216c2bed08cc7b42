"""``npconv bench``: command line, JSON output and the helpers it measures with.

Speed is never asserted here (a unit test on a shared machine cannot time
anything reliably); these tests check that the harness runs, reports every
number it promises, and fails cleanly on bad input. ``--max-busy 1 --max-stall 1``
keep a busy machine (other tests running) from making the bench drop and repeat rounds.
"""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from npconv import bench

QUICK = ["--suite", "quick", "--reps", "1", "--max-busy", "1", "--max-stall", "1"]
QUICK_NAMES = [layer.name for layer in bench.SUITES["quick"]]


def _load(path) -> dict:
    with open(path) as f:
        return json.load(f)


def _check_npconv_entry(entry: dict, reps: int) -> None:
    for kind in ("fwd", "fwdbwd"):
        assert entry[f"{kind}_ms"] > 0
        assert entry[f"{kind}_gflops"] > 0
        assert len(entry[f"{kind}_times_ms"]) == reps
        assert all(t > 0 for t in entry[f"{kind}_times_ms"])


def test_quick_suite_json_with_torch(tmp_path):
    """The brief's call (re-run in a child process with the malloc settings): full JSON record."""
    pytest.importorskip("torch")
    out = tmp_path / "b.json"
    assert bench.main(QUICK + ["--warmup", "1", "--json", str(out)]) == 0
    data = _load(out)
    assert data["format"] == "npconv-bench/1"
    assert data["config"]["layers"] == QUICK_NAMES
    assert data["config"]["torch"] is True
    # the child process ran with the recommended glibc malloc settings
    assert data["environment"]["malloc_env"] == bench.MALLOC_ENV
    assert [record["name"] for record in data["layers"]] == QUICK_NAMES
    for record in data["layers"]:
        assert record["flops_fwdbwd"] == 3 * record["flops_fwd"] > 0
        _check_npconv_entry(record["npconv"], reps=1)
        _check_npconv_entry(record["torch"], reps=1)
        assert record["ratio_fwd"] > 0 and record["ratio_fwdbwd"] > 0
        assert record["ratio_fwd"] == pytest.approx(record["npconv"]["fwd_ms"] / record["torch"]["fwd_ms"])
        assert record["workspace_mib"]["fwd"] >= 0 and record["workspace_mib"]["bwd"] >= 0
        stall = record["cpu_stall_share"]  # None where Linux PSI is unavailable
        assert stall is None or (set(stall) == {"npconv", "torch"} and min(stall.values()) >= 0)
        # same arrays, same maths: the results agree to float32 accuracy (loose: a sanity
        # check of the harness, the conformance tests check the values tightly)
        assert max(record["max_rel_err_vs_torch"].values()) < 1e-4
        assert len(record["blas_probe_gflops"]) == 2 and min(record["blas_probe_gflops"]) > 0
    summary = data["summary"]
    probes = [g for record in data["layers"] for g in record["blas_probe_gflops"]]
    assert summary["blas_probe_gflops"] == {"min": min(probes), "max": max(probes)}
    assert set(summary["blas_slow_layers"]) <= set(QUICK_NAMES)
    assert summary["layers_compared"] == 3
    ratios = [record["ratio_fwdbwd"] for record in data["layers"]]
    assert summary["geomean_ratio_fwdbwd"] == pytest.approx(math.prod(ratios) ** (1 / 3))
    assert summary["worst_layer"]["ratio_fwdbwd"] == max(ratios)


def test_no_torch_in_process(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert bench.main(QUICK + ["--no-torch", "--no-malloc-env", "--warmup", "1",
                               "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "interleaved" in printed and "busy" in printed      # the method is stated
    rows = [line for line in printed.splitlines() if line.split()[:1] and line.split()[0] in QUICK_NAMES]
    assert len(rows) == 3
    for row in rows:  # torch ms and ratio columns are "-"
        cells = row.replace("|", " ").split()
        assert cells[3] == cells[4] == cells[7] == cells[8] == "-"
        assert int(cells[-1]) > 0                                  # the BLAS probe, GFLOP/s
    assert "BLAS probe" in printed
    data = _load(out)
    assert data["config"]["torch"] is False
    for record in data["layers"]:
        _check_npconv_entry(record["npconv"], reps=1)
        assert record["torch"] is None and record["ratio_fwdbwd"] is None
    assert data["summary"]["geomean_ratio_fwdbwd"] is None
    assert data["summary"]["layers_compared"] == 0


def test_torch_not_installed(monkeypatch, capsys):
    """Without --no-torch but with torch missing: runs, says so, torch columns '-'."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert bench.main(["--layers", QUICK_NAMES[0], "--reps", "1", "--warmup", "0", "--max-busy", "1",
                       "--max-stall", "1", "--no-malloc-env"]) == 0
    printed = capsys.readouterr().out
    assert "torch is not installed" in printed
    row = next(line for line in printed.splitlines() if line.startswith(QUICK_NAMES[0]))
    assert row.replace("|", " ").split()[3] == "-"


def test_layers_pick_by_name_case_insensitive(tmp_path):
    out = tmp_path / "b.json"
    picked = [QUICK_NAMES[2], QUICK_NAMES[0].upper()]
    assert bench.main(["--layers", ",".join(picked), "--reps", "2", "--warmup", "0", "--max-busy", "1",
                       "--no-torch", "--no-malloc-env", "--dtype", "float64", "--no-lead-in",
                       "--json", str(out)]) == 0
    data = _load(out)
    assert data["config"]["lead_in"] is False
    assert [record["name"] for record in data["layers"]] == [QUICK_NAMES[2], QUICK_NAMES[0]]
    assert data["config"]["dtype"] == "float64" and data["config"]["suite"] == "custom"
    assert all(len(record["npconv"]["fwd_times_ms"]) == 2 for record in data["layers"])


@pytest.mark.parametrize("argv, expected", [
    (["--suite", "nope"], "unknown suite 'nope'"),
    (["--layers", "3x3_64@56,nope"], "unknown layer 'nope'"),
    (["--layers", ","], "empty list"),
    (["--dtype", "float16"], "invalid choice"),
    (["--threads", "0"], "positive integer"),
    (["--reps", "x"], "positive integer"),
    (["--max-busy", "2"], "fraction"),
    (["--max-stall", "0"], "fraction"),
    (["--quiet-wait", "-1"], "seconds"),
    (["--json", "/nonexistent-dir/b.json"], "does not exist"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_command_line_one_line_error(argv, expected, capsys):
    assert bench.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("npconv bench: error:")
    assert expected in lines[0]
    assert "Traceback" not in captured.err


def test_list_and_help(capsys):
    assert bench.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(layer.name in listed for suite in bench.SUITES.values() for layer in suite)
    assert bench.main(["--help"]) == 0
    assert "--no-malloc-env" in capsys.readouterr().out


def test_suites_match_issue_7():
    """12 default layers with the notes' shapes; layer names unique across suites."""
    default = bench.SUITES["default"]
    assert len(default) == 12
    names = [layer.name.lower() for suite in bench.SUITES.values() for layer in suite]
    assert len(names) == len(set(names))
    assert all("," not in name for name in names)   # --layers splits on commas
    (transpose,) = bench.SUITES["transpose"]
    assert (transpose.transposed, transpose.batch, transpose.c_in, transpose.c_out, transpose.size,
            transpose.kernel, transpose.stride, transpose.padding) == \
        (True, 8, 128, 64, (32, 32), (4, 4), 2, 1)


@pytest.mark.parametrize("name, out_size, torch_ms, torch_gflops", [
    # PERFORMANCE-NOTES anchor table: torch ms (GFLOP/s) -> FLOPs = ms * GFLOP/s * 1e6
    ("3x3_64@56", (56, 56), 17.0, 109),
    ("dw3x3_32@112", (112, 112), 12.8, 9),
    ("conv3d_16-32@16", (16, 16, 16), 7.8, 117),
    ("alexnet11x11s4_3-96@227", (55, 55), 20.4, 83),
])
def test_flops_match_performance_notes(name, out_size, torch_ms, torch_gflops):
    flops = bench.forward_flops(bench.ALL_LAYERS[name.lower()], out_size)
    # the notes round GFLOP/s to integers: agree within 6% (9 GF/s of the depthwise layer is 9.03)
    assert flops == pytest.approx(torch_ms * 1e-3 * torch_gflops * 1e9, rel=0.06)


def test_transposed_flops_equal_the_adjoint_convolution():
    # conv_transpose(x) costs what the convolution it is the adjoint of costs
    layer = bench.ALL_LAYERS["tr4x4s2_128-64@32"]
    adjoint = bench.Layer("adjoint", 8, 64, 128, (64, 64), (4, 4), stride=2, padding=1)
    assert bench.forward_flops(layer, (64, 64)) == bench.forward_flops(adjoint, (32, 32))


def test_workspace_bytes_excludes_the_result():
    def call():
        scratch = np.ones(2**20)            # 8 MiB temporary
        return scratch[:2**17].copy()       # 1 MiB result
    ws = bench.workspace_bytes(call)
    assert 8 * 2**20 <= ws < 8.5 * 2**20


def _fake_record(name: str, probes) -> dict:
    return {"name": name, "busy_rounds": [0.0], "ratio_fwd": 1.0, "ratio_fwdbwd": 1.0,
            "npconv": {"fwdbwd_gflops": 100.0}, "blas_probe_gflops": list(probes),
            "dropped_rounds": 0, "contended_rounds_kept": 0, "idle_cap_hits": 0,
            "max_rel_err_vs_torch": None}


def test_blas_probe_names_the_layers_measured_in_a_slow_spell():
    # 240 GFLOP/s best in the run: a layer whose probe fell to 120 (before or after its
    # rounds) is named; 200 (83%) is not
    records = [_fake_record("a", (240, 236)), _fake_record("b", (238, 120)),
               _fake_record("c", (200, 210)), _fake_record("d", (125, 130))]
    summary = bench.summarise(records, 0.0, 1.0)
    assert summary["blas_probe_gflops"] == {"min": 120, "max": 240}
    assert summary["blas_slow_layers"] == ["b", "d"]
    warning = next(line for line in bench._summary_lines(summary, records, 0.15) if "BLAS probe ran below" in line)
    assert "below 70%" in warning and warning.split(" around ", 1)[1].split(":", 1)[0] == "b, d"
    steady = [_fake_record("a", (240, 236)), _fake_record("c", (200, 210))]
    summary = bench.summarise(steady, 0.0, 1.0)
    assert summary["blas_slow_layers"] == []
    assert not any("BLAS probe ran below" in line for line in bench._summary_lines(summary, steady, 0.15))


def test_blas_probe_measures_the_probe_gemm():
    assert bench.blas_probe(reps=1) > 0
    a, b, out = bench._probe_operands()
    np.testing.assert_allclose(out, np.matmul(a, b), rtol=1e-5, atol=1e-4)   # it ran the product


def test_machine_state_helpers():
    assert bench.wait_idle(cap=0.05) in (True, False)
    share = bench.BusyMeter().share()
    assert share is None or 0.0 <= share <= 1.0
    arrays = bench.make_arrays(bench.ALL_LAYERS["q_3x3_16@16"], np.float32)
    again = bench.make_arrays(bench.ALL_LAYERS["q_3x3_16@16"], np.float32)
    assert arrays["x"].dtype == np.float32
    np.testing.assert_array_equal(arrays["x"], again["x"])  # fixed seed: reproducible inputs
