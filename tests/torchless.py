"""Run by tests/test_without_torch.py in a child Python (the dev venv with the train extra blocked, or a bare
venv with the built wheel and no torch): what a person serving the bundled model uses, on the default model
(no --model, no MELANOMA_MODEL). Writes report.json into the output folder; the test reads it.

usage: python torchless.py OUT IMAGE IMAGE [--block] [--processes]
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path


class Without:
    """A meta-path finder that finds none of `names` and asks `finder` for everything else: with every finder so
    wrapped, `import torch` fails and `find_spec("torch")` is None, as where it is not installed."""

    def __init__(self, finder, names):
        self.finder, self.names = finder, names

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names or not hasattr(self.finder, "find_spec"):
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.finder, attr)


def run(out: Path, images: list[str], block: bool, processes: bool) -> dict:
    if block:  # as if the train extra (PyTorch) were not installed
        from melanoma.errors import EXTRAS

        sys.meta_path[:] = [Without(f, EXTRAS["train"]) for f in sys.meta_path]
    os.environ.pop("MELANOMA_MODEL", None)
    from melanoma.cli import main as cli

    assert block <= (sys.modules.get("torch") is None)  # nothing imported torch before the finders were wrapped
    report: dict = {"predict_rc": cli(["predict", *images, "--cam", str(out / "cams"), "--csv", str(out / "p.csv")]),
                    "compare_rc": cli(["compare", *images[:2], "--out", str(out / "compare"), "--json"])}
    report["cams"] = len(list((out / "cams").rglob("*.png")))
    report["compare_files"] = sorted(p.name for p in (out / "compare").iterdir())

    from fastapi.testclient import TestClient

    from melanoma.api import create_app

    data = [Path(f).read_bytes() for f in images]
    with TestClient(create_app(None)) as client:
        about = client.get("/v1/model").json()
        report["api_model"] = {k: about[k] for k in ("engine", "maps", "file_sha256", "clean_test", "threshold")}
        report["api_predict"] = client.post("/v1/predict?cam=true", files=[("file", (Path(f).name, d)) for f, d in zip(images, data)]).json()
        report["api_compare"] = client.post("/v1/compare", files=[("before", ("a.jpg", data[0])), ("after", ("b.jpg", data[0]))]).json()

    from streamlit.testing.v1 import AppTest

    import melanoma

    page = AppTest.from_file(str(Path(melanoma.__file__).with_name("app.py")), default_timeout=120)
    page.run()
    page.file_uploader[0].set_value([(Path(images[0]).name, data[0], "image/jpeg")]).run()
    report["page_exception"] = [str(e.value) for e in page.exception]
    report["page_text"] = "\n".join(e.value for kind in ("markdown", "success", "error", "warning", "caption") for e in getattr(page, kind))
    report["page_images"] = len(page.get("image"))
    labels = out / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{f},{c}\n" for f, c in zip(images, ("Malignant", "Benign"))))
    report["calibrate_rc"] = cli(["calibrate", "--target-sensitivity", "0.9", "--out", str(out / "recalibrated.safetensors")])
    report["evaluate_rc"] = cli(["evaluate", "--labels", str(labels), "--bootstrap", "20", "--out", str(out / "evaluate")])

    if processes:  # `melanoma api` and `melanoma serve` as a person starts them
        import httpx2

        from melanoma.loadtest import Server, free_port

        with Server(None, out / "api.log") as server:
            server.wait_ready()
            answer = httpx2.post(server.url + "/v1/predict", files=[("file", ("a.jpg", data[0]))], timeout=60)
            report["api_process"] = answer.json()["results"][0]
        port = free_port()
        with open(out / "serve.log", "w") as log:
            serve = subprocess.Popen([sys.executable, "-m", "melanoma", "serve", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
            try:
                report["serve_health"] = None
                for _ in range(300):
                    try:
                        report["serve_health"] = httpx2.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).text
                        break
                    except httpx2.HTTPError:
                        time.sleep(0.2)
            finally:
                serve.terminate()
                serve.wait(30)
    report["torch_imported"] = sys.modules.get("torch") is not None
    return report


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    images = [a for a in sys.argv[2:] if not a.startswith("--")]
    (out / "report.json").write_text(json.dumps(run(out, images, "--block" in sys.argv, "--processes" in sys.argv)))
