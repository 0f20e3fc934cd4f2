"""`melanoma bench` runs every measurement for both models and writes its JSON and Markdown table.
(No timing is asserted here: speed goals live in the benchmark's output, not in tests.)"""

import json
import os

import pytest

from .conftest import melanoma_cli


@pytest.mark.slow
def test_bench_writes_both_models_side_by_side(recorded_run, data_dir, tmp_path):
    """On a small model with a recorded run (its int8 export draws 48 images again, not the bundled
    model's 21,000; `melanoma bench` without --model times the bundled file the same way)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    r = melanoma_cli("bench", "--model", recorded_run / "model.safetensors", "--data", data_dir, "--out", tmp_path, "--latency-runs", "3",
                     "--predict-images", "12", "--train-images", "70", env={**os.environ, "TMPDIR": str(scratch)})
    assert r.returncode == 0, r.stderr[-3000:]
    # its temporary folders (the random baseline, ONNX exports; mkdtemp's tmp* before they had a name) are gone;
    # torch's and ONNX Runtime's own caches may stay
    assert not [p.name for p in scratch.iterdir() if p.name.startswith(("tmp", "melanoma-bench-"))]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["machine"]["cores"] >= 1
    assert list(report["models"]) == ["efficientnet_lite0 (model.safetensors)", "seed_cnn (random weights)"]
    for row in report["models"].values():
        for key in ("latency_ms_median", "latency_ms_p90", "predict_torch_images_per_s", "predict_onnx_images_per_s",
                    "train_images_per_s", "predict_torch_peak_rss_mib", "train_peak_rss_mib"):
            assert row[key] > 0, key
        assert row["latency_ms_p90"] >= row["latency_ms_median"]
        assert row["process_images"] == 12 and row["process_images_per_s"] > 0 and row["process_one_image_seconds"] > 0
        assert row["process_peak_rss_mib"] > 0
    # the whole-process run of `melanoma predict` uses the int8 export where one can be made (a recorded training run)
    assert [row["process_model"] for row in report["models"].values()] == ["its int8 export", "the file itself"]
    table = (tmp_path / "bench.md").read_text()
    assert table.count("\n| efficientnet_lite0 (model.safetensors)") == 1 and table.count("\n| seed_cnn") == 1
    assert table in r.stdout


def test_bench_times_an_onnx_file_as_it_is(tiny_model_file, data_dir, tmp_path):
    """The bench reads its model file through `load_model`: an .onnx file is timed as itself (its ONNX
    phase; a float file has no int8 phase, no file has a torch one), and the table says "—" for the rest."""
    from melanoma import bench

    onnx = tmp_path / "tiny.onnx"
    r = melanoma_cli("export", "--onnx", onnx, "--model", tiny_model_file)
    assert r.returncode == 0, r.stderr[-2000:]
    assert bench.predict_throughput(str(onnx), data_dir, 8, "torch") == bench.predict_throughput(str(onnx), data_dir, 8, "int8") == {}
    row = bench.predict_throughput(str(onnx), data_dir, 8, "onnx") | bench.latency(str(onnx), data_dir, 2)  # seed_cnn: no map, the prediction alone
    row |= bench.process_time(str(onnx), data_dir, 4)
    assert row["process_model"] == "the file itself" and row["process_images"] == 4 and row["process_seconds"] > 0
    assert row["predict_onnx_images_per_s"] > 0 and row["latency_ms_median"] > 0
    row |= {"latency_ms_p90": 1.0, "predict_onnx_peak_rss_mib": 100.0, "train_images_per_s": 1.0, "train_peak_rss_mib": 200.0}
    machine = {"date": "today", "cpu": "cpu", "cores": 2, "torch": "2", "torch_threads": 2}
    table = bench.markdown({"machine": machine, "models": {"seed_cnn (tiny.onnx)": row}})
    # the ONNX phase's peak; none for the phases an .onnx file has not
    assert "| seed_cnn (tiny.onnx) |" in table and "| — |" in table and "| — / 100 / — / 200 MiB |" in table
