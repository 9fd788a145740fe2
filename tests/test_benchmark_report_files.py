"""The benchmarks' one report writer: file names, JSON that reads back, one trailing newline, machine slugs that
name the committed reports in benchmarks/reports/ as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.report_files import machine_slug, write_report

REPORTS = Path(__file__).resolve().parents[1] / "benchmarks" / "reports"


def test_machine_slug_of_a_gpu_name():
    assert machine_slug("NVIDIA H100 80GB HBM3") == "nvidia_h100_80gb_hbm3"
    assert machine_slug("  NVIDIA H200 ") == "nvidia_h200"
    assert machine_slug("cpu (2 cores)") == "cpu_2_cores"


def test_machine_slug_cut_after_trimming():
    name = "cpu cores 0,1 of a 2-core machine, no GPU"  # predict_benchmark.py --cpus 0,1
    assert machine_slug(name) == "cpu_cores_0_1_of_a_2_core_machine_no_gpu"
    assert machine_slug(name + " and more words", limit=40) == "cpu_cores_0_1_of_a_2_core_machine_no_gpu"
    assert machine_slug("(ab)", limit=1) == "a"


@pytest.mark.parametrize("name", [
    "train_" + machine_slug("NVIDIA H100 80GB HBM3"),
    "cv_" + machine_slug("NVIDIA H200"),
    "startup_phases_" + machine_slug("cpu (2 cores)"),
    "predict_" + machine_slug("cpu cores 0,1 of a 2-core machine, no GPU", limit=40) + "_tiny",
])
def test_committed_reports_keep_their_names(name):
    assert (REPORTS / f"{name}.json").is_file() and (REPORTS / f"{name}.md").is_file(), name


def test_extract_report_names_the_gpu_model():
    from benchmarks.extract_report import report_stem

    assert report_stem("NVIDIA H100 80GB HBM3") == "extract_h100"
    assert report_stem("NVIDIA H200") == "extract_h200"
    assert report_stem(None) == "extract_cpu"
    assert (REPORTS / "extract_h100.json").is_file()


@pytest.mark.parametrize("markdown", ["# Title\n\n| a |", "# Title\n\n| a |\n", "# Title\n\n| a |\n\n\n"])
def test_write_report_writes_json_and_markdown_pair(tmp_path, markdown):
    result = {"machine": "NVIDIA H100 80GB HBM3", "rows": [{"ms": 1.5, "note": None}], "ok": True}
    out = tmp_path / "new" / "reports"  # created
    json_path, md_path = write_report(out, "train_nvidia_h100_80gb_hbm3", result, markdown)
    assert json_path == out / "train_nvidia_h100_80gb_hbm3.json"
    assert md_path == out / "train_nvidia_h100_80gb_hbm3.md"
    assert sorted(p.name for p in out.iterdir()) == [json_path.name, md_path.name]
    assert json.loads(json_path.read_text()) == result
    assert json_path.read_text().endswith("}\n") and not json_path.read_text().endswith("\n\n")
    assert md_path.read_text() == "# Title\n\n| a |\n"


def test_write_report_replaces_its_own_earlier_report(tmp_path):
    write_report(tmp_path, "scale_cpu", {"runs": {}}, "first")
    json_path, md_path = write_report(str(tmp_path), "scale_cpu", {"runs": {"300": 1}}, "second")
    assert json.loads(json_path.read_text()) == {"runs": {"300": 1}}
    assert md_path.read_text() == "second\n"
