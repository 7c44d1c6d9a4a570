"""Benchmark hygiene (issue 28): a --smoke run never overwrites a recorded result in bench/results/
(its output goes to a temporary folder, or to a named --out that is not a recorded file), bench.methods
says where its folders are, and bench.host_overhead never reports a negative time."""
import os

import pytest

import bench
from bench import host_overhead, smoke_output
from tests.conftest import ROOT

RECORDED_KERNELS = "bench/results/kernels_smoke_cpu_x86_64_2_cores"
RECORDED_TRAIN = "bench/results/train_smoke_cpu.json"


def test_smoke_output_goes_to_a_temporary_folder_and_refuses_recorded_results(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert bench.is_recorded(RECORDED_TRAIN) and bench.is_recorded(RECORDED_KERNELS + ".json")
    assert not bench.is_recorded(str(tmp_path / "x.json"))
    p = smoke_output("kernels_smoke", None, (".json", ".md"))
    assert not os.path.abspath(p).startswith(str(ROOT)) and os.path.isdir(os.path.dirname(p))
    assert smoke_output("x", str(tmp_path / "mine")) == str(tmp_path / "mine")
    with pytest.raises(ValueError, match="recorded result"):
        smoke_output("kernels_smoke", RECORDED_KERNELS, (".json", ".md"))


@pytest.mark.parametrize("script,out", [("kernels", RECORDED_KERNELS), ("train", RECORDED_TRAIN)])
def test_smoke_runs_refuse_to_overwrite_before_any_work(script, out, monkeypatch, capsys):
    """Refused at once (exit 2, the file named), the recorded file untouched."""
    import importlib
    monkeypatch.chdir(ROOT)
    path = out + (".json" if script == "kernels" else "")
    before = (ROOT / path).read_bytes()
    mod = importlib.import_module(f"bench.{script}")
    with pytest.raises(SystemExit) as e:
        mod.main(["--smoke", "--out", out])
    assert e.value.code == 2 and "recorded result" in capsys.readouterr().err
    assert (ROOT / path).read_bytes() == before


def test_methods_says_where_its_folders_are(monkeypatch, capsys):
    from bench import methods
    seen = {}
    monkeypatch.setattr(methods, "run", lambda s, out, work, *a, **k: seen.update(out=out, work=work))
    assert methods.main(["--smoke"]) == 0
    err = capsys.readouterr().err
    assert str(seen["out"]) in err and str(seen["work"]) in err and "temporary folder" in err


def test_host_overhead_never_reports_a_negative_time():
    res = {"batch": [{"batch": 1, "host_us": -3.2, "total_us": 5.0, "host_us_per_seq": -3.2}],
           "phases": [{"calls": "1-4", "batch": 32, "schedule": -0.4, "host": 2.0}]}
    assert host_overhead.drop_negative(res) == 3
    assert res["batch"][0] == {"batch": 1, "host_us": None, "total_us": 5.0, "host_us_per_seq": None}
    assert res["phases"][0] == {"calls": "1-4", "batch": 32, "schedule": None, "host": 2.0}
    assert host_overhead._f(-1.0).strip() == "noise" and host_overhead._f(2.0).strip() == "2.0"
