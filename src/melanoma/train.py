"""Training: group-aware validation split, fine-tuning with early stopping, then calibration.

`main(config)` runs the steps of `_run`: `prepare_data` (decode, group near-duplicates, split),
`record_data`, `start` (ImageNet, --init or a checkpoint), `fit` (epoch by epoch through
`train_one_epoch`, keeping the best weights by validation ROC AUC), `calibrate_and_save` (temperature
and threshold on validation, the OOD score, one model file with everything in it). A checkpoint
after every epoch (and on Ctrl-C) lets `--resume` continue exactly (checkpoint.py); under torchrun
the same code runs data-parallel (parallel.py). Messages go to the `melanoma.train` logger.

The recipe is recipe.py, the images and split split.py, what each epoch sees sampling.py. This file is
over 300 lines because it is the run itself, step after step as `_run` calls them: split further, a
reader would jump between files to follow one run.
"""

from __future__ import annotations

import csv
import json
import logging
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from . import checkpoint, ood_fit
from . import model as models
from .calibration import calibrated_probability, operating_point
from .checkpoint import Progress
from .data import CLASS_NAMES
from .errors import Interrupted, UsageError
from .kinds import code_of, kind_set
from .kinds_fit import correct_for_prior, kinds_operating_point, training_prior
from .lineage import check_same_run
from .modelinfo import ModelInfo
from .parallel import Parallel
from .preprocess import TRAINING_LOOK, Preprocess, normalize, train_augment
from .recipe import TrainConfig
from .sampling import ArrayDataset, epoch_batches, epoch_pool, mix_targets, mixup_batch, sampled_kinds, training_weights
from .scoring import predict_logits, validation_record
from .seeding import derive_seed, seed_everything
from .sources import source_record
from .split import Split, data_changed_message, prepare_data, run_sources

LOG = logging.getLogger(__name__)  # shown on stderr by process 0 alone (cli.log_to_stderr)


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM (what torchrun, SLURM, Kubernetes and `kill` send) during training
    sets a flag; the loop saves a checkpoint at the next batch boundary and exits. A second one
    interrupts at once (the last checkpoint stays intact)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        LOG.info(f"\n{name}: stopping after this batch and saving a checkpoint (again to stop at once)")

    def __enter__(self):
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def freeze_early_layers(model: models.Classifier, arch: str, n_blocks: int) -> list[nn.Module]:
    """Stop gradients into the stem and first n blocks; they also keep their BatchNorm statistics."""
    if not arch.startswith("efficientnet_lite") or n_blocks <= 0:
        return []
    net: Any = model.features.net  # efficientnet_lite_pytorch's EfficientNet (no type information)
    frozen = [net._conv_stem, net._bn0, *net._blocks[:n_blocks]]
    for m in frozen:
        m.requires_grad_(False)
    return frozen


class Trainee(nn.Module):
    """What `--diagnosis` trains: the classifier, whose kinds head (`model.kinds`, one logit per kind of
    kinds.KINDS the training sources name) reads the same pooled features as the verdict. The model
    file keeps the head (kinds.py): the differential and the estimate of another skin cancer."""

    def __init__(self, model: models.Classifier, kinds: list[str]):
        super().__init__()
        self.model = model
        head: Any = model.head  # an nn.Sequential ending with its Linear layer (model.efficientnet_lite, seed_cnn)
        model.kinds, model.kind_codes = nn.Linear(head[-1].in_features, len(kinds)), list(kinds)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        head: Any = self.model.head
        pooled = head[:-1](self.model.features(x))
        return head[-1](pooled), cast(nn.Linear, self.model.kinds)(pooled)


def diagnosis_targets(samples) -> tuple[list[str], torch.Tensor]:
    """The kinds (kinds.KINDS' codes; ISIC 2017's names mapped to them) the training images' sources
    name, sorted, and each image's index among them; -1 where its source names none (the Kaggle folders)."""
    codes = [code_of(s.kind) if s.kind else None for s in samples]
    names = sorted({c for c in codes if c})
    index = {name: i for i, name in enumerate(names)}
    return names, torch.tensor([index[c] if c else -1 for c in codes], dtype=torch.long)


def diagnosis_sets(samples, labels: np.ndarray, unnamed: str) -> torch.Tensor:
    """Each training image's allowed kinds (n x kinds, bool; kinds.kind_set, over `diagnosis_targets`' kinds)."""
    names = diagnosis_targets(samples)[0]
    return torch.tensor([kind_set(code_of(s.kind) if s.kind else None, int(y), names, unnamed) for s, y in zip(samples, labels)],
                        dtype=torch.bool).reshape(len(samples), len(names))


def kinds_loss(logits: torch.Tensor, sets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Per image: minus the log of the kinds head's probability of the image's allowed kinds (`sets`), with label
    smoothing as cross-entropy has it ((1 - smoothing) of that, plus smoothing times the mean over the kinds of minus
    their log probability); 0 where no kind is allowed. With one allowed kind it is cross-entropy's."""
    known = sets.any(1)
    allowed = torch.where(known[:, None], sets, torch.ones_like(sets))  # rows without a kind: a finite 0, masked below
    every = torch.logsumexp(logits, 1)
    inside = torch.logsumexp(logits.masked_fill(~allowed, float("-inf")), 1)
    return torch.where(known, (1 - smoothing) * (every - inside) + smoothing * (every - logits.mean(1)), torch.zeros_like(every))


@dataclass
class Fitting:
    """What the epochs of a run work with: the network (wrapped for a data-parallel run), its training
    data and loss weights (`sample_weights`), the optimizer and schedule, the layers kept frozen, the
    recipe, the preprocessing and the processes."""

    net: nn.Module
    dataset: ArrayDataset
    weights: torch.Tensor
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    frozen: list[nn.Module]
    config: TrainConfig
    pre: Preprocess
    par: Parallel
    capped: dict = field(default_factory=dict)  # sampled_kinds of the training images: diagnoses an epoch sees only a draw of
    diagnoses: torch.Tensor | None = None  # with --diagnosis: each training image's allowed kinds (n x kinds, bool; diagnosis_sets)


def train_one_epoch(f: Fitting, progress: Progress, stop: StopRequest) -> bool:
    """Train the epoch after `progress.epochs_done`, from batch `progress.batches_done` on, updating
    `progress` as it goes. Returns False when Ctrl-C asked to stop before the epoch was over.

    Each global batch is split across the processes of a distributed run; the loss is the sum over
    the whole global batch weighted by `f.weights`, divided by its total weight (DistributedDataParallel
    averages gradients over processes, hence the factor `par.world`), so one process and N give the
    same gradient up to float summation order and per-process BatchNorm statistics. With distillation
    targets (`dataset.targets`) the loss is the same sum against those probabilities."""
    from tqdm import tqdm

    net, dataset, weights, config, pre, par = f.net, f.dataset, f.weights, f.config, f.pre, f.par
    epoch = progress.epochs_done + 1
    dataset.epoch = epoch
    batches = epoch_batches(len(dataset), config.batch_size, config.seed, epoch, epoch_pool(len(dataset), f.capped, config.seed, epoch))
    shards = [b[par.rank :: par.world] for b in batches[progress.batches_done :]]
    denominators = [float(weights[b].sum()) for b in batches[progress.batches_done :]]
    loader = DataLoader(dataset, batch_sampler=shards, num_workers=config.workers, pin_memory=par.device.type == "cuda")
    net.train()
    for m in f.frozen:
        m.eval()
    bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", unit="batch", file=sys.stderr, mininterval=2,
               initial=progress.batches_done, total=len(batches), disable=not par.main)
    t0 = time.time()
    for shard, denominator, (images, labels) in zip(shards, denominators, bar):
        torch.manual_seed(derive_seed(config.seed, epoch, progress.batches_done, 1))  # dropout of this batch
        x, y = normalize(images.to(par.device, non_blocking=True), pre), labels.to(par.device, non_blocking=True)
        target = y if dataset.targets is None else dataset.targets[shard].to(par.device)
        w = weights[shard].to(par.device)
        if config.mixup:
            x, target, w = mixup_batch(x, target, w, config.mixup, derive_seed(config.seed, epoch, progress.batches_done, 2))
        with par.autocast():
            logits = net(x)
        if f.diagnoses is not None:  # a Trainee: the verdict's logits and the diagnosis head's
            logits, diagnosis = logits
        each = nn.functional.cross_entropy(logits.float(), target, reduction="none", label_smoothing=config.label_smoothing)
        if f.diagnoses is not None:
            each = each + config.diagnosis * kinds_loss(diagnosis.float(), f.diagnoses[shard].to(par.device), config.label_smoothing)
        loss = (each * w).sum() * (par.world / denominator)
        f.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        f.optimizer.step()
        f.scheduler.step()
        with torch.no_grad():
            plain = nn.functional.cross_entropy(logits.float(), y, reduction="sum")  # unweighted, like the validation loss
            n, loss_sum, correct, stopping = par.sum([len(y), plain.item(), (logits.argmax(1) == y).sum().item(), float(stop.requested)])
        progress.batches_done += 1
        progress.seen += int(n)
        progress.loss_sum += loss_sum
        progress.correct += int(correct)
        progress.seconds += time.time() - t0
        t0 = time.time()
        bar.set_postfix(loss=f"{progress.loss_sum / progress.seen:.4f}", acc=f"{progress.correct / progress.seen:.4f}", refresh=False)
        if stopping and progress.batches_done < len(batches):
            stop.requested = True
            bar.close()
            return False
    return True


def initial_model(config: TrainConfig, pretrained: bool = True) -> tuple[models.Classifier, Preprocess]:
    """The network a run starts from (seeded), channels_last."""
    seed_everything(config.seed)
    model, pre = models.build(config.arch, pretrained=pretrained and config.arch != "seed_cnn", image_size=config.img_size,
                              colour_reference=TRAINING_LOOK if config.colour == "matched" else None, framing=config.framing)
    return model.to(memory_format=torch.channels_last), pre  # type: ignore[call-overload]  # Module.to takes memory_format; torch's stubs omit it


def main(config: TrainConfig, data_dir: Path | None, out_dir: Path, resume: bool = False, runtime: dict | None = None) -> Path:
    """Train into `out_dir`; with `resume`, continue the run saved there (its own config, but the
    `runtime` settings given now, e.g. workers: they do not change the result). Under torchrun every
    process runs this; process 0 alone prints the log and writes files."""
    saved = None
    if resume:
        try:
            saved = checkpoint.load(out_dir)
        except checkpoint.CheckpointError as exc:
            raise UsageError(str(exc)) from None
        unknown = sorted(set(saved.config) - {f.name for f in fields(TrainConfig)})
        if unknown:
            raise UsageError(f"{out_dir / checkpoint.CHECKPOINT_NAME}: written by another version of this program "
                             f"(settings it does not know: {', '.join(unknown)}); start a new run with --out")
        config = replace(TrainConfig(**saved.config), **(runtime or {}))
    par = Parallel()
    try:
        return _run(config, data_dir, out_dir, saved, par)
    finally:
        par.close()


@dataclass
class Run:
    """What every step of one training run reads: its recipe, folder, processes, preprocessing and data."""

    config: TrainConfig
    out_dir: Path
    par: Parallel
    pre: Preprocess
    data: Split


def _run(config: TrainConfig, data_dir: Path | None, out_dir: Path, saved: checkpoint.Checkpoint | None, par: Parallel) -> Path:
    """The run as named steps: build the network, prepare the data, start (ImageNet, --init or the
    checkpoint), fit epoch by epoch, then calibrate, fit the OOD score and save."""
    model, pre = initial_model(config, pretrained=saved is None)
    frozen = freeze_early_layers(model, config.arch, config.freeze_blocks)
    model = model.to(par.device)
    sources = run_sources(config.sources, data_dir)
    run = Run(config, out_dir, par, pre, prepare_data(sources, pre, config.limit, config.val_fraction, config.data_seed, quiet=not par.main))
    record_data(run, data_dir, saved)
    trainee = with_diagnosis(run, model)
    optimizer, scheduler, progress, best_state = start(run, model, trainee, saved)
    best_state = fit(run, model, trainee, frozen, optimizer, scheduler, progress, best_state)
    model.load_state_dict(best_state)
    return calibrate_and_save(run, model, progress)


def record_data(run: Run, data_dir: Path | None, saved: checkpoint.Checkpoint | None) -> None:
    """Refuse data that changed under a resumed run or a batch too small for the processes; log the
    split and write unreadable.json and split.json."""
    data, par = run.data, run.par
    if saved is not None and saved.fingerprint != data.fingerprint:
        raise UsageError(data_changed_message(run.out_dir, run.config.sources or data_dir, data.samples))
    LOG.info(f"{len(data.samples)} training images ({len(data.unreadable)} unreadable skipped), {len(data.samples) - len(set(data.groups))} "
             f"near-duplicates (or images of one lesion) grouped; train {len(data.tr)}, validation {len(data.va)}"
             + (f"; {par.world} processes" if par.world > 1 else ""))
    if par.main:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        (run.out_dir / "unreadable.json").write_text(json.dumps(data.unreadable, indent=1))
        (run.out_dir / "split.json").write_text(json.dumps({"train": [data.samples[i].rel for i in data.tr],
                                                            "validation": [data.samples[i].rel for i in data.va]}))
    if run.config.batch_size < par.world:
        raise UsageError(f"--batch-size {run.config.batch_size} is smaller than the {par.world} processes sharing each batch")


def with_diagnosis(run: Run, model: models.Classifier) -> nn.Module:
    """What the epochs train: the classifier, or with --diagnosis a `Trainee` (classifier + diagnosis head)."""
    if not run.config.diagnosis:
        return model
    names, index = diagnosis_targets(run.data.samples_of(run.data.tr))
    if not names:
        raise UsageError("--diagnosis: no training source names a diagnosis (a source folder's labels.csv)")
    counts = torch.bincount(index[index >= 0], minlength=len(names)).tolist()
    unnamed = f"{int((index < 0).sum())} without a diagnosis " + (
        "(their label as a set of kinds)" if run.config.unnamed_kinds == "label" else "(the verdict's loss alone)")
    LOG.info(f"diagnosis head: {', '.join(f'{n} {c}' for n, c in zip(names, counts))} training images; {unnamed}")
    return Trainee(model, names).to(run.par.device)


def start(run: Run, model: nn.Module, trainee: nn.Module, saved: checkpoint.Checkpoint | None):
    """Optimizer, schedule, progress and best weights so far: fresh, from the --init model (whose
    validation scores an epoch must beat), or from the checkpoint being resumed (`trainee`: what the
    epochs train, `with_diagnosis`)."""
    config, data = run.config, run.data
    optimizer = torch.optim.AdamW([p for p in trainee.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = len(epoch_batches(len(data.tr), config.batch_size, config.seed, 1,
                                        epoch_pool(len(data.tr), sampled_kinds(data.samples_of(data.tr), data.sources), config.seed, 1)))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15)
    progress, best_state = Progress(), None
    if saved is None and config.init:
        best_state = start_from(model, config, run.pre, data.fingerprint, data.digest, run.par)
        progress.best_loss, _, progress.best_auc = validation_scores(model, data.views_of(data.va), data.labels[data.va], run.pre, run.par.device)
        LOG.info(f"starting from {config.init}: val_loss={progress.best_loss:.4f} val_auc={progress.best_auc:.4f} "
                 "(an epoch must beat this to replace it)")
    if saved is not None:
        trainee.load_state_dict(saved.model_state)
        optimizer.load_state_dict(saved.optimizer_state)
        scheduler.load_state_dict(saved.scheduler_state)
        if scheduler.total_steps != config.epochs * steps_per_epoch:  # a sources file whose per_epoch changed since
            raise UsageError(f"{run.out_dir}: an epoch now has {steps_per_epoch} batches, not the {scheduler.total_steps // config.epochs} "
                             "the run started with (the sources file's per_epoch changed?); start a new run with a new --out")
        progress, best_state = saved.progress, saved.best_state
        LOG.info(f"resuming {run.out_dir}: {progress.epochs_done} epochs done"
                 + (f", {progress.batches_done} batches into epoch {progress.epochs_done + 1}" if progress.batches_done else ""))
    return optimizer, scheduler, progress, best_state


def fit(run: Run, model: nn.Module, trainee: nn.Module, frozen: list[nn.Module], optimizer, scheduler, progress: Progress,
        best_state: dict | None) -> dict:
    """Epochs until early stopping or the last one, a checkpoint after each (and on Ctrl-C); returns
    the best weights of `model` by validation ROC AUC (ties: the lower validation loss). `trainee` is
    what the epochs train and the checkpoint keeps (`with_diagnosis`)."""
    config, data, par = run.config, run.data, run.par
    train_views, val_views, val_labels = data.views_of(data.tr), data.views_of(data.va), data.labels[data.va]
    targets = distillation_targets(config, run.pre, data.fingerprint, data.digest, train_views, data.labels[data.tr], par) if config.teacher else None
    train_ds = ArrayDataset(train_views, data.labels[data.tr], train_augment(run.pre.image_size, config.seed, robust=config.augment == "robust"),
                            config.seed, targets)
    train_samples = data.samples_of(data.tr)
    weights, _, capped = training_weights(train_samples, data.labels[data.tr], data.groups[data.tr], data.sources, config.duplicates == "once")
    if capped:
        pool = epoch_pool(len(data.tr), capped, config.seed, 1)
        assert pool is not None  # something is capped
        LOG.info(f"each epoch sees {len(pool)} of the {len(data.tr)} training images ("
                 + ", ".join(f"{src} {kind}: {cap} of {len(idx)}" for (src, kind), (idx, cap) in capped.items()) + ")")
    fitting = Fitting(par.wrap(trainee), train_ds, weights, optimizer, scheduler, frozen, config, run.pre, par, capped,
                      diagnosis_sets(train_samples, data.labels[data.tr], config.unnamed_kinds) if config.diagnosis else None)

    def save_checkpoint():
        if par.main:
            checkpoint.save(run.out_dir, trainee, best_state, optimizer, scheduler, asdict(config), data.fingerprint, progress)

    with StopRequest() as stop:
        while not progress.finished:
            if not train_one_epoch(fitting, progress, stop):
                save_checkpoint()
                exit_interrupted(run.out_dir, progress)
            epoch = progress.epochs_done + 1
            val_loss, val_acc, val_auc = validation_scores(model, val_views, val_labels, run.pre, par.device)  # every process: they all decide alike
            row = dict(epoch=epoch, train_loss=progress.loss_sum / progress.seen, train_acc=progress.correct / progress.seen,
                       val_loss=val_loss, val_acc=val_acc, val_auc=val_auc, seconds=progress.seconds)
            progress.history.append(row)
            LOG.info(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            if par.main:
                write_history(progress.history, run.out_dir)
            if val_auc > progress.best_auc or (val_auc == progress.best_auc and progress.best_loss is not None and val_loss < progress.best_loss):
                progress.best_auc, progress.best_loss, progress.best_epoch, progress.stale = val_auc, val_loss, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                progress.stale += 1
            if progress.stale >= config.patience:
                LOG.info(f"early stop: no better validation AUC for {config.patience} epochs")
            progress.epoch_over(epoch)
            progress.finished = progress.stale >= config.patience or epoch >= config.epochs
            save_checkpoint()
            if stop.requested and not progress.finished:
                exit_interrupted(run.out_dir, progress)
    assert best_state is not None  # set by the first epoch (best_auc starts at -1), --init or the checkpoint
    return best_state


def calibrate_and_save(run: Run, model: models.Classifier, progress: Progress) -> Path:
    """Temperature and threshold on validation, the OOD score on train (cut-off on validation), the
    model file and the training curves (process 0 only)."""
    from .plots import plot_history

    config, data, par = run.config, run.data, run.par
    val_views, val_labels = data.views_of(data.va), data.labels[data.va]
    logits = predict_logits(model, val_views, run.pre, par.device)
    path = run.out_dir / "model.safetensors"
    if not par.main:
        return path
    ood_cutoff = ood_fit.attach(model, run.pre, data.views_of(data.tr), data.labels[data.tr], val_views, par.device)
    temperature, p_val, threshold = operating_point(logits, val_labels, config.target_sensitivity)
    assert threshold is not None and model.ood is not None  # a run has a target sensitivity; ood_fit.attach set model.ood
    validation = {
        **validation_record(data, p_val, threshold),
        "best_epoch": progress.best_epoch,  # 0: no epoch beat the --init model
        "split_sha256": data.digest,  # which images were held out (see start_from)
        "epochs_run": len(progress.history),
    }
    info = ModelInfo(
        arch=config.arch, preprocess=run.pre, class_names=CLASS_NAMES, threshold=float(threshold), temperature=float(temperature),
        target_sensitivity=config.target_sensitivity, train_config=asdict(config), data_fingerprint=data.fingerprint,
        validation=validation, history=progress.history, versions=models.versions(), ood_cutoff=ood_cutoff, ood_block=model.ood.block,
        sources=[source_record(src, data.samples) for src in data.sources],
    )
    if model.kinds is not None:  # --diagnosis: the head corrected for its training prior, the other-cancer threshold chosen on validation
        info = correct_for_prior(model.cpu(), info, training_prior(data, model.kind_codes, config.duplicates == "once", config.unnamed_kinds))
        info = kinds_operating_point(model, info, data, config.other_target_sensitivity)
    models.save(path, model.cpu(), info)
    plot_history(progress.history, run.out_dir / "training_curves.png")
    LOG.info(f"saved {path}: temperature {temperature:.3f}, threshold {threshold:.3f}, validation {json.dumps(validation)}")
    return path


def validation_scores(model, views: list[np.ndarray], labels: np.ndarray, pre: Preprocess, device) -> tuple[float, float, float]:
    """Validation loss, accuracy and ROC AUC (of the logit difference) of `model`."""
    from sklearn.metrics import roc_auc_score

    logits = predict_logits(model, views, pre, device)
    loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)))
    return loss, float((logits.argmax(1) == labels).mean()), float(roc_auc_score(labels, logits[:, 1] - logits[:, 0]))


def start_from(model: nn.Module, config: TrainConfig, pre: Preprocess, data_fingerprint: str, split: str, par: Parallel) -> dict:
    """Load the --init model's weights into `model` (see lineage.check_same_run); returns a copy of them (the best so far)."""
    assert config.init is not None  # only a run with --init starts from one
    init, info = models.load(config.init)
    if info.members:
        raise UsageError(f"{config.init}: an ensemble of {len(info.members)} networks; --init starts from one network's weights "
                         "(give a member's own file, or distil the ensemble with --teacher)")
    check_same_run(config.init, info, config, pre, data_fingerprint, split, weights_only=True)
    state = {k: v for k, v in init.state_dict().items() if not k.startswith(("ood.", "kinds."))}  # refitted at the end
    kinds = getattr(model, "kinds", None)
    if isinstance(kinds, nn.Linear):  # --diagnosis: a fresh kinds head (the --init model's, if any, may name other kinds)
        state |= {f"kinds.{k}": v for k, v in kinds.state_dict().items()}
    model.load_state_dict(state)
    return {k: v.detach().clone().to(par.device) for k, v in state.items()}


def distillation_targets(config: TrainConfig, pre: Preprocess, data_fingerprint: str, split: str, views: list[np.ndarray],
                         labels: np.ndarray, par: Parallel) -> torch.Tensor:
    """Knowledge distillation from an ensemble: each training image's target mixes its label with the
    teachers' mean calibrated probability (on the unaugmented view), `config.distill` of the latter.
    The teachers must share this run's validation split (lineage.check_same_run), or they would carry
    validation labels into training. Computed once, before the first epoch."""
    probs = []
    assert config.teacher is not None  # called only for a run with teachers (fit)
    for path in config.teacher:
        teacher, info = models.load(path)
        check_same_run(path, info, config, pre, data_fingerprint, split)
        t0 = time.time()
        logits = predict_logits(teacher.to(par.device), views, pre, par.device)
        probs.append(calibrated_probability(logits, info.temperature))
        LOG.info(f"teacher {path}: training-image accuracy {((probs[-1] >= 0.5) == labels).mean():.4f} ({time.time() - t0:.0f} s)")
    return mix_targets(labels, np.mean(probs, axis=0), config.distill)


def exit_interrupted(out_dir: Path, progress: Progress) -> None:
    where = f"epoch {progress.epochs_done + 1}, batch {progress.batches_done}" if progress.batches_done else f"after epoch {progress.epochs_done}"
    LOG.info(f"interrupted: checkpoint saved ({where}); continue with: melanoma train --resume {out_dir}")
    raise Interrupted()


def write_history(history: list[dict], out_dir: Path) -> None:
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    with open(out_dir / "history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
