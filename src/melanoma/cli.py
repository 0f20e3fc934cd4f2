"""The `melanoma` command: the parser and one short handler per subcommand (audit, train, describe,
evaluate, fit-ood, calibrate, ensemble, select, predict, compare, check-compare, export, bench, serve, api, loadtest). Over 300 lines because it holds
every subcommand's flags and help in one place, where `tests/test_documented_commands.py` checks the
docs against them; each handler imports what it needs when it runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .errors import EXTRAS, Interrupted, UsageError, missing_extra, require_extra
from .modelinfo import ARCHITECTURE_NAMES, RUN_RECORD, ModelFileError, ModelInfo


def whole(low: int, high: int | None = None):
    """An argparse type: a whole number in [low, high]; anything else is a usage error (exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is not " + (f"between {low} and {high}" if high is not None else f"at least {low}"))
        return value
    return parse


def fraction(text: str) -> float:
    """An argparse type: a number in (0, 1], e.g. a target sensitivity."""
    value = positive(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in (0, 1], e.g. 0.95")
    return value


def positive(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _train(args) -> int:
    from .data import check_outside, data_dir, resolve_data_dir
    from .recipe import TrainConfig
    from .train import main

    given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    runtime = {k: v for k, v in given.items() if k in TrainConfig.RUNTIME}
    if args.resume:
        if set(given) - set(TrainConfig.RUNTIME) or args.out:
            print("error: --resume continues with the run's own recipe; give only --data and --workers besides it", file=sys.stderr)
            return 2
        out = Path(args.resume)
    elif args.out:
        out = Path(args.out)
    else:
        print("error: give --out RUN_DIR for a new run, or --resume RUN_DIR to continue one", file=sys.stderr)
        return 2
    try:
        config = TrainConfig(**given)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if config.sources and args.data:
        print("error: --sources names every training source (the Kaggle data too); give it or --data, not both", file=sys.stderr)
        return 2
    if config.sources:
        from .sources import read_sources_file

        data = None
        for src in read_sources_file(config.sources):
            check_outside(src.path, out)
    elif args.resume:  # the run's own sources; the Kaggle folder is needed only by a run without a sources file
        data = data_dir(args.data)
    else:
        data = resolve_data_dir(args.data)
        check_outside(data, out)
    main(config, data, out, resume=bool(args.resume), runtime=runtime)
    return 0


def _describe(args) -> int:
    """What a model file is: architecture, operating point, validation, training sources and the weights' licence."""
    from .loader import load_model

    _, info = load_model(args.model)
    lines = [f"model: {args.model or 'the bundled model'}", f"architecture: {info.arch}, input {info.preprocess.image_size} px, "
             f"framing {info.preprocess.framing}", *member_lines(info), *operating_point_lines(info), *kinds_lines(info)]
    lines.append("training sources:" if info.sources else "training sources: not recorded in this file")
    for r in info.sources:
        counts = "; ".join(f"{label} " + ", ".join(f"{k} {n}" for k, n in kinds.items()) for label, kinds in r["images"].items())
        lines.append(f"  {r['name']} ({r['licence']}): {counts}; files sha256 {r['files_sha256'][:16]}")
    lines.append(f"licence of the weights: {info.licence}")
    print("\n".join(lines))
    if args.validation_csv:
        _validation_csv(info, Path(args.validation_csv))
    return 0


def _validation_csv(info: ModelInfo, out: Path) -> None:
    """`describe --validation-csv`: the model's own validation images, drawn again from its recorded split, as a labels CSV."""
    from .data import check_outside
    from .selection import write_validation_csv
    from .split import model_data_dir, model_split

    data = model_data_dir(info, None)  # as calibrate and fit-ood without --data: its sources file, or $MELANOMA_DATA or the default
    check_outside(data, out)
    n = write_validation_csv(model_split(info, data, keep_views=False), out)
    print(f"wrote {out} ({n} validation images)", file=sys.stderr)


def operating_point_lines(info: ModelInfo) -> list[str]:
    """A model file's threshold and temperature and its validation figures (per source where recorded)."""
    v = info.validation
    lines = [f"threshold {info.threshold:.3f} on the calibrated probability (temperature {info.temperature:.3f}), chosen on validation "
             f"for sensitivity {info.target_sensitivity}",
             f"validation: {v.get('images')} images, ROC AUC {v.get('auc', float('nan')):.4f}, sensitivity {v.get('sensitivity', float('nan')):.4f}, "
             f"specificity {v.get('specificity', float('nan')):.4f}"]
    for source, f in (v.get("by_source") or {}).items():
        auc = f"ROC AUC {f['auc']:.4f}, " if f.get("auc") is not None else ""
        parts = [f"sensitivity {f['sensitivity']:.4f}" if f.get("sensitivity") is not None else "",
                 f"specificity {f['specificity']:.4f}" if f.get("specificity") is not None else ""]
        lines.append(f"  {source}: {f['images']} images ({f['melanomas']} melanomas), {auc}{', '.join(p for p in parts if p)}")
    return lines


def kinds_lines(info: ModelInfo) -> list[str]:
    """A kinds head's kinds, other-cancer threshold and validation figures ([] without one; kinds.py)."""
    if not info.kinds:
        return ["kinds head: none (the verdict is melanoma suspected or not; other skin cancers are not named)"]
    v = info.kinds_validation
    lines = ["melanoma estimate: read from the kinds head (its melanoma logit against the mean of the other kinds')"] if info.melanoma_from_kinds else []
    lines += [f"kinds head: {', '.join(info.kinds)}; " + (
             f"other skin cancer suspected at {info.other_threshold:.3f}, chosen on validation for sensitivity {info.other_target_sensitivity}"
             if info.other_threshold is not None else "no other-cancer threshold (no other skin cancer among its validation images): "
             "the verdict speaks for melanoma alone"),
             f"  validation: {v.get('images')} images that name a kind, balanced accuracy of the top kind {v.get('balanced_accuracy', float('nan')):.3f}"]
    for k, f in (v.get("by_kind") or {}).items():
        lines.append(f"  {k}: {f['images']} images, top-kind recall {f['recall']:.3f}, sent to a doctor {f['sent_to_doctor']:.3f}, "
                     f"named another skin cancer {f['named_other_cancer']:.3f}")
    return lines


def _fit_kinds(args) -> int:
    from . import model as models
    from .data import check_outside
    from .kinds_fit import fit, keep_head
    from .split import model_data_dir, with_sources

    model, info = models.load(args.model)
    info = with_sources(info, args.sources)
    data = model_data_dir(info, args.data)
    check_outside(data, args.out)
    info = (keep_head if args.keep_head else fit)(model, info, data, args.target_sensitivity)
    models.save(Path(args.out), model, info)
    print(f"wrote {args.out}", file=sys.stderr)
    print("\n".join(kinds_lines(info)))
    return 0


def _audit(args) -> int:
    from .audit import run_audit
    from .data import check_outside, resolve_data_dir

    data = resolve_data_dir(args.data)
    check_outside(data, args.out)
    report = run_audit(data, Path(args.out))
    print((Path(args.out) / "audit.md").read_text(), end="")
    return 1 if report["unreadable"] and args.strict else 0


def _evaluate(args) -> int:
    from .data import check_outside, data_dir
    from .evaluate import run

    if not args.labels:
        check_outside(data_dir(args.data), args.out)
    for folder in args.ood_against or []:
        if not Path(folder).is_dir():
            print(f"error: --ood-against {folder}: not a folder", file=sys.stderr)
            return 2
    run(args.model, args.data and Path(args.data), Path(args.out), bootstrap=args.bootstrap, labels=args.labels, shifts=args.shifts,
        ood_against=args.ood_against, faithfulness_images=args.faithfulness, by_kind=args.by_kind)
    return 0


def _fit_ood(args) -> int:
    from dataclasses import replace

    from . import model as models
    from . import ood_fit
    from .data import check_outside
    from .split import model_data_dir, model_split, with_sources

    model, info = models.load(args.model)  # fitted on its run's training images, its cut-off set on its validation split
    info = with_sources(info, args.sources)
    data = model_data_dir(info, args.data)
    check_outside(data, args.out)
    split = model_split(info, data)
    cutoff = ood_fit.attach(model, info.preprocess, split.views_of(split.tr), split.labels[split.tr], split.views_of(split.va))
    assert model.ood is not None  # set by ood_fit.attach
    models.save(Path(args.out), model, replace(info, ood_cutoff=cutoff, ood_block=model.ood.block))
    print(f"wrote {args.out} (out-of-distribution cut-off {cutoff:.4g})", file=sys.stderr)
    return 0


def _calibrate(args) -> int:
    from dataclasses import replace

    from . import model as models
    from .calibration import operating_point
    from .data import check_outside
    from .scoring import predict_logits, validation_record
    from .split import model_data_dir, model_split, with_sources

    model, info = models.load(args.model)
    if args.melanoma_from_kinds:
        try:
            models.kinds_margin_head(model)
        except ValueError as exc:
            raise UsageError(f"--melanoma-from-kinds: {args.model or 'the bundled model'}: {exc}") from None
        info = replace(info, melanoma_from_kinds=True)
    info = with_sources(info, args.sources)
    data = model_data_dir(info, args.data)
    check_outside(data, args.out)
    split = model_split(info, data, keep_views=False)  # only the validation images are decoded for the model
    logits = predict_logits(model, split.views_of(split.va), info.preprocess)
    temperature, p, threshold = operating_point(logits, split.labels[split.va], args.target_sensitivity)
    assert threshold is not None  # a target was given
    run = {k: v for k, v in info.validation.items() if k in RUN_RECORD}
    info = replace(info, temperature=float(temperature), threshold=float(threshold), target_sensitivity=args.target_sensitivity,
                   validation={**validation_record(split, p, threshold), **run})
    if model.kinds is not None:  # the other-cancer estimate shares what the melanoma estimate leaves (kinds.py): choose its threshold again
        from .kinds_fit import kinds_operating_point

        info = kinds_operating_point(model, info, split, info.other_target_sensitivity or 0.9)
    models.save(Path(args.out), model, info)
    print(f"wrote {args.out}", file=sys.stderr)
    print("\n".join(operating_point_lines(info)))
    return 0


def _ensemble(args) -> int:
    from . import model as models
    from .data import check_outside
    from .ensemble import calibrate_whole, combine
    from .split import model_data_dir, with_sources

    model, info = combine(args.members, half=args.float16)
    info = with_sources(info, args.sources)
    data = model_data_dir(info, args.data)
    check_outside(data, args.out)
    info = calibrate_whole(model, info, data, args.target_sensitivity)
    models.save(Path(args.out), model, info)
    print(f"wrote {args.out}", file=sys.stderr)
    print("\n".join(member_lines(info) + operating_point_lines(info)))
    return 0


def member_lines(info: ModelInfo) -> list[str]:
    """An ensemble's members: name, recipe and own validation ROC AUC ([] for one network)."""
    from .recipe import TrainConfig

    if not info.members:
        return []
    defaults = TrainConfig()
    lines = [f"ensemble of {len(info.members)} members (the mean of their logits), calibrated as a whole:"]
    for m in info.members:
        recipe = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in m["train_config"].items()
                          if k not in TrainConfig.RUNTIME and hasattr(defaults, k) and v != getattr(defaults, k))
        lines.append(f"  {m['name']}: {recipe or 'the default recipe'}; its own validation ROC AUC {m['validation'].get('auc', float('nan')):.4f}")
    return lines


SOURCES_HELP = ("the sources file the model was trained from, where it is not where the model records it "
                "(default: as recorded, from the working folder or the repository)")
DROPPED_IN = "0.2.0"  # the release that drops what is deprecated now (README, "Deprecated")


def _predict(args) -> int:
    from .loader import load_model
    from .predict import inference_streams, run

    if args.engine:  # deprecated: the model file's suffix picks the engine
        print(f"warning: --engine is deprecated and goes in melanoma {DROPPED_IN}: the model file picks the engine "
              "(--model FILE.onnx runs through ONNX Runtime, anything else through torch)", file=sys.stderr)
        if (args.engine == "onnx") != str(args.model or "").lower().endswith(".onnx"):
            print(f"error: --engine {args.engine} with {args.model or 'the bundled model'}: "
                  + ("give --model FILE.onnx, written by `melanoma export --onnx FILE.onnx`" if args.engine == "onnx"
                     else "an .onnx file runs through ONNX Runtime; drop --engine"), file=sys.stderr)
            return 2
    model, info = load_model(args.model, threads=inference_streams(cam=bool(args.cam))[1])
    cam = args.cam
    if cam and not model.maps:
        print(f"note: {args.model}: this model file carries no Grad-CAM map: no overlays written", file=sys.stderr)
        cam = None
    return run(args.paths, model, info, args.csv, cam, workers=args.workers)


def _compare(args) -> int:
    import json

    from .compare_report import answer, picture, text
    from .images import ImageError, load_image
    from .loader import load_model

    try:
        before, after = load_image(args.before), load_image(args.after)
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    model, info = load_model(args.model)
    body, result = answer(before, after, model, info)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(body, indent=1) + "\n")
        drawn = picture(result)
        if drawn is not None:
            drawn.save(out / "compare.png")
        else:
            (out / "compare.png").unlink(missing_ok=True)  # an earlier pair's picture would read as this one's
        print(f"wrote {out / 'compare.json'}" + ("" if drawn is None else f" and {out / 'compare.png'}"), file=sys.stderr)
    print(json.dumps(body) if args.json else text(body, args.before, args.after))
    return 0


def _check_compare(args) -> int:
    from .compare_check import run
    from .data import resolve_data_dir

    summary = run(resolve_data_dir(args.data), Path(args.ham), Path(args.out), n=args.pairs, seed=args.seed)["summary"]
    print("\n".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in summary.items()))
    return 0


def _export(args) -> int:
    require_extra("train", "melanoma export")
    from .int8 import quantize, ranks_worse
    from .model import load
    from .modelinfo import file_sha256
    from .onnx_model import export
    from .split import model_data_dir

    model, info = load(args.model)
    if not args.int8:
        export(model, info, args.onnx, exported_from=file_sha256(args.model), float16=getattr(model, "half_storage", False))
    else:
        from .split import validation_views, with_sources

        info = with_sources(info, args.sources)
        views, labels = validation_views(info, model_data_dir(info, args.data))
        refitted = quantize(model, info, views[: args.calibration_images], (views, labels), args.onnx)
        v = refitted.validation
        print(f"int8 refitted on its {v['images']} validation images: temperature {refitted.temperature:.3f} (float {info.temperature:.3f}), "
              f"threshold {refitted.threshold:.3f} (float {info.threshold:.3f}), sensitivity {v['sensitivity']:.4f}, "
              f"specificity {v['specificity']:.4f}, ROC AUC {v['auc']:.4f}, {v['float_verdicts_kept']:.1%} of the float graph's verdicts kept; "
              f"its first {v['float_convs_first']} convolutions kept float", file=sys.stderr)
        if ranks_worse(v):
            print(f"note: {args.onnx}: the int8 graph ranks the validation images worse than the float graph or changes its verdicts "
                  f"(ROC AUC {v['auc']:.4f} against {v['float_graph_auc']:.4f}; {v['float_verdicts_kept']:.1%} of its verdicts kept) "
                  f"even with its first {v['float_convs_first']} "
                  "convolutions kept float: use the float export (without --int8) where the verdict matters",
                  file=sys.stderr)
    print(f"wrote {args.onnx}", file=sys.stderr)
    return 0


def _bench(args) -> int:
    require_extra("train", "melanoma bench")
    from .bench import run
    from .data import check_outside, resolve_data_dir

    data = resolve_data_dir(args.data)
    check_outside(data, args.out)
    run(data, Path(args.out), {"latency_runs": args.latency_runs, "predict_images": args.predict_images,
                               "train_images": args.train_images}, args.model)
    print((Path(args.out) / "bench.md").read_text(), end="")
    return 0


def _serve(args) -> int:
    require_extra("app", "melanoma serve")
    import os

    from . import MALLOC_ENVIRONMENT
    from .images import MAX_FILE_BYTES
    from .loader import load_model

    load_model(args.model)  # a bad model file fails here, with a clear message, not on the page
    env = dict(os.environ, MELANOMA_MODEL=str(Path(args.model).resolve()) if args.model else "", **MALLOC_ENVIRONMENT)
    app = Path(__file__).with_name("app.py")
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", args.host, "--server.port", str(args.port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.showErrorDetails", "false",
           "--client.toolbarMode", "minimal", "--server.maxUploadSize", str(MAX_FILE_BYTES // 2**20)]
    print(f"serving on http://{args.host}:{args.port}  (Ctrl-C stops)", file=sys.stderr)
    sys.stderr.flush()
    # Become the server (no child process): a `kill` of this process then stops the page too,
    # instead of leaving Streamlit running as an orphan.
    os.execve(sys.executable, cmd, env)


def _api(args) -> int:
    require_extra("api", "melanoma api")
    import os

    import uvicorn

    from .api import create_app, limits_text
    from .loader import load_model

    key = args.api_key or os.environ.get("MELANOMA_API_KEY") or None
    threads = max(1, (os.cpu_count() or 1) // args.workers)  # the model's thread pool in each worker process
    # a bad model file fails here, in one line, before anything listens
    app = create_app(args.model, key, args.cors_origin, threads=threads) if args.workers == 1 else load_model(args.model)
    print(f"API on http://{args.host}:{args.port} (docs at /docs; {'an API key is required' if key else 'no API key'}; "
          f"{limits_text()}; Ctrl-C stops)", file=sys.stderr)
    if args.workers == 1:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
        return 0
    os.environ.update(MELANOMA_MODEL=str(Path(args.model).resolve()) if args.model else "", MELANOMA_API_KEY=key or "",
                      MELANOMA_CORS_ORIGINS=",".join(args.cors_origin or []), MELANOMA_API_THREADS=str(threads))
    uvicorn.run("melanoma.api:app_from_environment", factory=True, host=args.host, port=args.port, workers=args.workers, log_level="info")
    return 0


def _loadtest(args) -> int:
    require_extra("api", "melanoma loadtest")
    from .data import resolve_data_dir
    from .loadtest import run

    image = Path(args.image) if args.image else next(iter(sorted((resolve_data_dir(args.data) / "test" / "Benign").glob("*.jpg"))), None)
    if image is None:
        raise UsageError("no test image found: give --image FILE")
    report = run(Path(args.out), image, args.model, args.clients, args.requests, args.time_limit, args.abusive_clients)
    print((Path(args.out) / "loadtest.md").read_text(), end="")
    return 0 if not (report["errors"] or report["mismatched_answers"] or report["timed_out"]) else 1


def _select(args) -> int:
    """The rule of docs/selection.md: prints the figures and the decision; writes the JSON; adds a line to the log."""
    import json

    from .selection import append_log, compare, log_row, table

    result = compare(args.reference, args.candidate, args.member or [], resamples=args.resamples)
    name = args.name or Path(args.candidate).resolve().name
    result["name"] = name
    print(table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    if args.log:
        append_log(args.log, log_row(result, name, Path(args.reference).resolve().name))
        print(f"added a line to the log in {args.log}", file=sys.stderr)
    return 0


DATA_HELP = "data folder laid out as the Kaggle download (train/, test/); default $MELANOMA_DATA or ../shared/data/melanoma"


def build_parser() -> argparse.ArgumentParser:
    """The parser: one `_add_<subcommand>` function per subcommand, in the order `melanoma --help` lists them."""
    p = argparse.ArgumentParser(prog="melanoma", description="Melanoma classifier for dermoscopy images (not a medical device).",
                                epilog="exit status: 0 done, 1 something named could not be used or the run failed, "
                                       "2 a wrong command line, 130 stopped (Ctrl-C or SIGTERM)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_audit(sub)
    _add_train(sub)
    _add_describe(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_compare(sub)
    _add_check_compare(sub)
    _add_fit_ood(sub)
    _add_calibrate(sub)
    _add_fit_kinds(sub)
    _add_ensemble(sub)
    _add_export(sub)
    _add_bench(sub)
    _add_serve(sub)
    _add_api(sub)
    _add_loadtest(sub)
    _add_select(sub)
    return p


def _add_audit(sub) -> None:
    a = sub.add_parser("audit", help="counts, unreadable files, near-duplicates within train and across train/test")
    a.add_argument("--data", help=DATA_HELP)
    a.add_argument("--out", required=True, help="folder for audit.json, audit.md, test_near_duplicates.txt")
    a.add_argument("--strict", action="store_true", help="exit 1 when any file is unreadable")
    a.set_defaults(func=_audit)



def _add_train(sub) -> None:
    from .recipe import TrainConfig

    t = sub.add_parser("train", help="train a model (at most 30 epochs, early stopping) and calibrate it on validation")
    t.add_argument("--data", help=DATA_HELP)
    t.add_argument("--out", help="run folder for a new run: model.safetensors, checkpoint, history, curves")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or killed run from its last checkpoint")
    d = TrainConfig()
    for flag, kind, text in [
        ("--arch", str, "efficientnet_lite0, seed_cnn, or the bigger efficientnet_lite1/2 (needs the `bigger` extra)"), ("--epochs", int, "maximum epochs"),
        ("--patience", int, "epochs without a better validation AUC before stopping"),
        ("--img-size", int, "input side in pixels (default: the architecture's)"), ("--batch-size", int, ""),
        ("--lr", float, "peak learning rate"), ("--weight-decay", float, ""),
        ("--freeze-blocks", int, "efficientnet_lite*: keep the stem and first N blocks at ImageNet weights"),
        ("--val-fraction", float, ""), ("--target-sensitivity", float, "validation sensitivity the threshold is chosen for"),
        ("--seed", int, "the network's start, batch order and augmentation"),
        ("--split-seed", int, "the validation split's draw (default: --seed); ensemble members share it and differ in --seed"),
        ("--limit", int, "use at most N training images per class (quick runs)"),
        ("--workers", int, "DataLoader worker processes"),
        ("--init", str, "start from this model file's weights instead of ImageNet's (trained on the same data, --seed and --val-fraction)"),
        ("--distill", float, "with --teacher: the teachers' share of each training target, 0-1"),
        ("--augment", str, "standard, or robust: also closer/farther, resolution, blur, JPEG, noise, illuminant"),
        ("--colour", str, "fixed, or matched: each image's colours matched to the training look (carried by the model file)"),
        ("--framing", str, "centre (the centred square), or lesion: a square around the spot (carried by the model file)"),
        ("--label-smoothing", float, "cross-entropy label smoothing, 0-0.5"),
        ("--duplicates", str, "each (every image weighs alike), or once: a group of near-duplicate images weighs as one image"),
        ("--mixup", float, "mixup: blend each batch with itself shuffled, shares drawn from Beta(a, a); 0 is off, 0.2 is usual"),
        ("--sources", str, "a sources file (TOML) naming every training source, e.g. sources/kaggle+archives.toml: the Kaggle data "
                           "and other labelled folders, each with its licence (instead of --data)"),
        ("--diagnosis", float, "weight of the loss of a kinds head trained beside the verdict on the images whose source names "
                               "a diagnosis (HAM10000's seven kinds; a labels.csv): the model file keeps it, for the differential "
                               "and the estimate of another skin cancer; 0 is off"),
        ("--other-target-sensitivity", float, "with --diagnosis: validation sensitivity for other skin cancers the other-cancer "
                                              "threshold is chosen for"),
        ("--unnamed-kinds", str, "with --diagnosis: ignore (the kinds head learns only from images whose source names their kind), "
                                 "or label: also from the others (the Kaggle folders), their label as a set of kinds (Malignant: "
                                 "melanoma; Benign: any harmless kind)"),
    ]:
        dest = flag[2:].replace("-", "_")
        default = getattr(d, dest)
        kw: dict[str, Any] = {"--arch": {"choices": list(ARCHITECTURE_NAMES)}, "--augment": {"choices": ["standard", "robust"]},
              "--colour": {"choices": ["fixed", "matched"]}, "--framing": {"choices": ["centre", "lesion"]},
              "--duplicates": {"choices": ["each", "once"]}, "--unnamed-kinds": {"choices": ["ignore", "label"]}}.get(flag, {})
        t.add_argument(flag, dest=dest, type=kind, help=f"{text} (default {default})" if default is not None else text, **kw)
    t.add_argument("--teacher", action="append", metavar="FILE",
                   help="distil from this model file (repeat for an ensemble; trained on the same data, --seed and --val-fraction)")
    t.set_defaults(func=_train)



def _add_describe(sub) -> None:
    i = sub.add_parser("describe", help="what a model file is: operating point, validation, training sources, the weights' licence")
    i.add_argument("--model", help="model file (default: the bundled model)")
    i.add_argument("--validation-csv", dest="validation_csv", metavar="FILE",
                   help="also write the model's own validation images (its split drawn again from the training data, "
                   "$MELANOMA_DATA or ../shared/data/melanoma, or its sources file) as a labels CSV: path,label,source,lesion_id")
    i.set_defaults(func=_describe)



def _add_evaluate(sub) -> None:
    e = sub.add_parser("evaluate", help="metrics and plots on the test split and its clean subset, or on any labelled images")
    e.add_argument("--model", help="model file (default: the bundled model)")
    e.add_argument("--data", help="the Kaggle layout (its test/ is scored, the clean subset measured against its train/), or a folder "
                   "with Benign/ and Malignant/; default $MELANOMA_DATA or ../shared/data/melanoma")
    e.add_argument("--labels", metavar="FILE.csv", help="score the images a CSV lists instead (path,label rows; paths relative to the CSV)")
    e.add_argument("--by-kind", metavar="COLUMN", help="with --labels: also the figures per kind of image, by this column of the CSV "
                   "(e.g. the diagnosis): images, share called right, ROC AUC against the other class")
    e.add_argument("--shifts", action="store_true",
                   help="also score the clean test images (or the whole set) under the shift suite: resolution, JPEG, blur, noise, "
                   "closer, farther, rotation, light, brightness, gamma, vignette, phone photo")
    e.add_argument("--ood-against", action="append", metavar="DIR",
                   help="a folder of other images (no labels needed): how many the out-of-distribution score flags, and how well "
                   "it tells them from the evaluated ones (repeatable)")
    e.add_argument("--faithfulness", type=whole(0), default=0, metavar="N",
                   help="also run the deletion test of the Grad-CAM maps on N clean test images (or N of the set)")
    e.add_argument("--out", required=True, help="folder for metrics.json, predictions.csv and the plots")
    e.add_argument("--bootstrap", type=whole(0), default=1000, help="bootstrap resamples for the ROC AUC interval (0: none)")
    e.set_defaults(func=_evaluate)



def _add_predict(sub) -> None:
    r = sub.add_parser("predict", help="classify images (files or folders, searched recursively)")
    r.add_argument("paths", nargs="+", metavar="PATH")
    r.add_argument("--model", help="model file: .safetensors, or .onnx from `melanoma export` (run by ONNX Runtime) "
                                   "(default: the bundled model)")
    r.add_argument("--csv", help="write path,p_malignant,label,ood_score,ood,verdict,p_other_cancer,top_kind,differential rows to this file")
    r.add_argument("--engine", choices=["torch", "onnx"], help=argparse.SUPPRESS)  # deprecated (_predict), goes in DROPPED_IN
    r.add_argument("--cam", metavar="DIR", help="write a Grad-CAM overlay PNG per image into DIR")
    r.add_argument("--workers", type=whole(0), help="threads decoding images ahead of the model (default: 1, or one per core beyond 2, "
                                                    "up to 4; 0: decoded between batches)")
    r.set_defaults(func=_predict)



def _add_compare(sub) -> None:
    m = sub.add_parser("compare", help="two photos of one spot, months apart: aligned, outlined, and what changed")
    m.add_argument("before", metavar="BEFORE", help="the earlier photo")
    m.add_argument("after", metavar="AFTER", help="the later photo")
    m.add_argument("--model", help="model file for the two melanoma estimates (default: the bundled model)")
    m.add_argument("--out", metavar="DIR", help="write compare.json and compare.png (both photos aligned, outlined, and the difference) into DIR")
    m.add_argument("--json", action="store_true", help="print one JSON object instead of words")
    m.set_defaults(func=_compare)



def _add_check_compare(sub) -> None:
    k = sub.add_parser("check-compare", help="how well `compare` reads change on pairs whose truth is known (docs/compare.md)")
    k.add_argument("--data", help=DATA_HELP)
    k.add_argument("--ham", default="../shared/data/extra-train/ham10000",
                   help="HAM10000 folder with labels.csv (lesion_id): its same-lesion and different-lesion pairs (default %(default)s)")
    k.add_argument("--pairs", type=whole(1), default=200, help="pairs of each kind (default %(default)s)")
    k.add_argument("--seed", type=whole(0), default=0, help="which photos and changes are drawn (default %(default)s)")
    k.add_argument("--out", required=True, help="the JSON file to write (every pair and the summary)")
    k.set_defaults(func=_check_compare)



def _add_fit_ood(sub) -> None:
    o = sub.add_parser("fit-ood", help="fit the out-of-distribution score of a model file anew (weights, threshold and temperature unchanged)")
    o.add_argument("--model", help="model file (default: the bundled model)")
    o.add_argument("--data", help=DATA_HELP)
    o.add_argument("--out", required=True, help="the model file to write (the model with the score)")
    o.add_argument("--sources", help=SOURCES_HELP)
    o.set_defaults(func=_fit_ood)



def _add_calibrate(sub) -> None:
    c = sub.add_parser("calibrate", help="fit a model file's temperature and threshold anew for another target sensitivity "
                                         "(weights and OOD score unchanged, but for --melanoma-from-kinds)")
    c.add_argument("--model", help="model file (default: the bundled model)")
    c.add_argument("--data", help=DATA_HELP)
    c.add_argument("--target-sensitivity", type=fraction, required=True, help="validation sensitivity the threshold is chosen for")
    c.add_argument("--out", required=True, help="the model file to write")
    c.add_argument("--sources", help=SOURCES_HELP)
    c.add_argument("--melanoma-from-kinds", action="store_true",
                   help="read the melanoma estimate from the model's kinds head (its melanoma logit against the mean of the other "
                        "kinds') instead of the melanoma head, then fit the temperature and threshold for it")
    c.set_defaults(func=_calibrate)



def _add_fit_kinds(sub) -> None:
    k = sub.add_parser("fit-kinds", help="give a model file a kinds head (a differential over the seven kinds and the estimate of "
                                         "another skin cancer), fitted on its own training images; melanoma head unchanged")
    k.add_argument("--model", help="model file (default: the bundled model)")
    k.add_argument("--data", help=DATA_HELP)
    k.add_argument("--target-sensitivity", type=fraction, default=0.9,
                   help="validation sensitivity for other skin cancers the other-cancer threshold is chosen for (default 0.9)")
    k.add_argument("--out", required=True, help="the model file to write")
    k.add_argument("--sources", help=SOURCES_HELP)
    k.add_argument("--keep-head", action="store_true",
                   help="keep the kinds head trained end to end (train --diagnosis, from before 2026-12-07): correct its bias for "
                        "the prior its weighted training loss taught it, and choose the threshold again")
    k.set_defaults(func=_fit_kinds)



def _add_ensemble(sub) -> None:
    n = sub.add_parser("ensemble", help="several trained models as one model file (the mean of their logits), calibrated as a "
                                        "whole on the validation split they share")
    n.add_argument("members", nargs="+", metavar="MEMBER", help="member model files (same architecture, data and --split-seed)")
    n.add_argument("--data", help=DATA_HELP)
    n.add_argument("--target-sensitivity", type=fraction, required=True, help="validation sensitivity the threshold is chosen for")
    n.add_argument("--float16", action="store_true", help="keep the members' weights as float16 in the file (half its size; "
                   "the calibration is fitted on the rounded weights)")
    n.add_argument("--out", required=True, help="the model file to write")
    n.add_argument("--sources", help=SOURCES_HELP)
    n.set_defaults(func=_ensemble)



def _add_export(sub) -> None:
    from .int8 import CALIBRATION_IMAGES

    x = sub.add_parser("export", help="write the model as ONNX (with its threshold and preprocessing in the metadata)")
    x.add_argument("--onnx", required=True, metavar="FILE", help="the .onnx file to write")
    x.add_argument("--model", help="model file (default: the bundled model)")
    x.add_argument("--int8", action="store_true", help="statically quantised to int8, its ranges measured on the model's own "
                   "validation images (needs --data: the model's training data)")
    x.add_argument("--data", help="with --int8: " + DATA_HELP)
    x.add_argument("--calibration-images", dest="calibration_images", type=whole(1), default=CALIBRATION_IMAGES,
                   help="with --int8: validation images the activation ranges are measured on (default %(default)s)")
    x.add_argument("--sources", help=SOURCES_HELP)
    x.set_defaults(func=_export)



def _add_bench(sub) -> None:
    b = sub.add_parser("bench", help="time prediction, Grad-CAM, ONNX Runtime and training; writes bench.json and bench.md")
    b.add_argument("--data", help=DATA_HELP)
    b.add_argument("--out", required=True, help="folder for bench.json and bench.md")
    b.add_argument("--model", help="model file: .safetensors (timed as torch, ONNX and int8 exports) or .onnx (timed as it is) "
                                   "(default: the bundled model)")
    b.add_argument("--latency-runs", dest="latency_runs", type=whole(1), default=50, help="single-image runs (default %(default)s)")
    b.add_argument("--predict-images", dest="predict_images", type=whole(1), default=1000, help="test images for batch prediction (default %(default)s)")
    b.add_argument("--train-images", dest="train_images", type=whole(1), default=320, help="training images for the training speed (default %(default)s)")
    b.set_defaults(func=_bench)



def _add_serve(sub) -> None:
    s = sub.add_parser("serve", help="start the web page")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=whole(1, 65535), default=8501)
    s.add_argument("--model", help="model file (default: the bundled model)")
    s.set_defaults(func=_serve)



def _add_api(sub) -> None:
    h = sub.add_parser("api", help="start the HTTP API (POST /v1/predict, GET /v1/model, /healthz; docs at /docs)")
    h.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    h.add_argument("--port", type=whole(1, 65535), default=8000)
    h.add_argument("--model", help="model file (default: the bundled model)")
    h.add_argument("--workers", type=whole(1), default=1, help="server processes, each with its own copy of the model (default %(default)s)")
    h.add_argument("--api-key", dest="api_key", help="require 'Authorization: Bearer KEY' on every endpoint but /healthz "
                   "(or set MELANOMA_API_KEY, which keeps the key out of the process list)")
    h.add_argument("--cors-origin", dest="cors_origin", action="append", metavar="ORIGIN",
                   help="let web pages from this origin call the API (repeatable; default: none)")
    h.set_defaults(func=_api)



def _add_loadtest(sub) -> None:
    g = sub.add_parser("loadtest", help="the HTTP API under load on loopback: errors, answers against predict, latency, memory")
    g.add_argument("--out", required=True, help="folder for loadtest.json and loadtest.md")
    g.add_argument("--image", help="the image every request sends (default: the first test/Benign image of --data)")
    g.add_argument("--data", help=DATA_HELP)
    g.add_argument("--model", help="model file (default: the bundled model)")
    g.add_argument("--clients", type=whole(1), default=32, help="concurrent clients (default %(default)s)")
    g.add_argument("--requests", type=whole(1), default=1000, help="requests in all (default %(default)s)")
    g.add_argument("--abusive-clients", dest="abusive_clients", type=whole(0), default=0,
                   help="clients besides, each sending the largest requests the limits allow until the others are done (default 0)")
    g.add_argument("--time-limit", dest="time_limit", type=positive, default=600, help="seconds before the load is stopped (default %(default)s)")
    g.set_defaults(func=_loadtest)



def _add_select(sub) -> None:
    q = sub.add_parser("select", help="whether a candidate replaces the bundled model, by the rule of docs/selection.md: "
                                      "paired bootstrap of F on the development sets")
    q.add_argument("reference", metavar="REFERENCE_DIR", help="the bundled model's scored folder: {isic,pad,val}/ from `melanoma evaluate`")
    q.add_argument("candidate", metavar="CANDIDATE_DIR", help="the candidate's scored folder, laid out alike")
    q.add_argument("--member", action="append", metavar="DIR",
                   help="a scored folder of one of the candidate's members or seeds (repeatable): ΔM must exceed their spread")
    q.add_argument("--name", help="the candidate's name in the log (default: CANDIDATE_DIR's name)")
    q.add_argument("--out", metavar="FILE.json", help="write every figure and the decision to this JSON file")
    q.add_argument("--log", metavar="FILE.md", help="add one line to the log table that ends this file (docs/selection.md)")
    q.add_argument("--resamples", type=whole(1), default=2000, help="paired bootstrap resamples (default %(default)s, seed 0)")
    q.set_defaults(func=_select)


def log_to_stderr() -> None:
    """The package's log messages (training progress, skipped files) as plain lines on stderr, from
    process 0 alone under torchrun (RANK)."""
    import logging
    import os

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(lambda record: os.environ.get("RANK", "0") == "0")
    logger = logging.getLogger("melanoma")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    from . import keep_freed_memory_in_the_heap

    keep_freed_memory_in_the_heap()
    log_to_stderr()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ModelFileError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Interrupted:
        return 130
    except ModuleNotFoundError as exc:  # a command or a .safetensors model file without the train extra (PyTorch)
        if exc.name not in EXTRAS["train"]:
            raise
        print(f"error: {missing_extra('train', f'melanoma {args.command}', [exc.name])}", file=sys.stderr)
        return 1
    except OSError as exc:  # an output folder that cannot be written, a disk that is full...
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
