"""The command line: a wrong command line exits 2 with a one-line reason, before anything runs."""

import pytest

from melanoma import __version__
from melanoma.cli import main


@pytest.mark.parametrize("argv, words", [
    (["predict", "x.jpg", "--workers", "-1"], "-1 is not at least 0"),
    (["api", "--workers", "0"], "0 is not at least 1"),
    (["api", "--port", "70000"], "70000 is not between 1 and 65535"),
    (["serve", "--port", "http"], "'http' is not a whole number"),
    (["evaluate", "--out", "x", "--bootstrap", "-5"], "-5 is not at least 0"),
    (["bench", "--out", "x", "--latency-runs", "0"], "0 is not at least 1"),
    (["loadtest", "--out", "x", "--time-limit", "nan"], "nan is not a positive number"),
    (["export", "--onnx", "x.onnx", "--int8", "--calibration-images", "0"], "0 is not at least 1"),
    (["train", "--out", "x", "--epochs", "0"], "--epochs must be between 1 and 30"),
    (["train", "--out", "x", "--lr", "0"], "--lr must be in (0, 1)"),
    (["train", "--out", "x", "--weight-decay", "-0.1"], "--weight-decay in [0, 1)"),
    (["train", "--out", "x", "--freeze-blocks", "-1"], "--freeze-blocks and --workers must be 0 or more"),
    (["train", "--out", "x", "--diagnosis", "0.5", "--mixup", "0.2"], "--diagnosis and --mixup do not go together"),
])
def test_a_wrong_command_line_exits_2_naming_the_value(argv, words, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusal
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"melanoma {__version__}"


@pytest.mark.parametrize("settings, words", [({"epochs": 0}, "--epochs must be between 1 and 30"), ({"mixup": -1}, "--mixup"),
                                             ({"distill": 0.3}, "--distill needs at least one --teacher")])
def test_a_recipe_checks_itself_when_made_from_python(settings, words):
    """`train.main(TrainConfig(epochs=0))` from Python is refused as the command line is, before anything runs."""
    from melanoma.errors import UsageError
    from melanoma.recipe import TrainConfig

    with pytest.raises(UsageError, match=words.replace("-", r"\-")):
        TrainConfig(**settings)
    assert TrainConfig().problem() is None
