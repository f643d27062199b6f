"""The training loop, top to bottom: setup -> data -> model -> optimizer -> steps -> log -> save."""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cosface.backbones import build_backbone_for
from cosface.checkpoint import (FORMAT, FORMAT_VERSION, atomic_save, checkpoint_config, checkpoint_name,
                                checkpoint_problem, latest_good_checkpoint, list_checkpoints, load_checkpoint,
                                missing_training_state, nonfinite_entries, restore_training_state, rng_state, set_rng_state,
                                training_state, versions)
from cosface.config import Config
from cosface.data.dataset import Plan, make_loader
from cosface.data.gpu_decode import GpuDecodeLoader, resolve_decoder
from cosface.data.sources import open_source
from cosface.errors import CosfaceError
from cosface.finetune import FineTune
from cosface.fsio import write_text
from cosface.logsinks import MetricsLog
from cosface.losses import margin_text
from cosface.logsinks import check_extras as check_log_extras
from cosface.optim import clip_gradients, param_groups
from cosface.parallel import Runtime, setup_runtime
from cosface.portable import portable_config, portable_path
from cosface.preflight import DivergenceWatch, check_resume_config, data_warnings
from cosface.rundir import claim_run_dir
from cosface.schedules import learning_rate
from cosface.selection import BEST_NAME, BestCheckpoint
from cosface.step import GraphedStep, build_optimizer, build_step, cudnn_benchmark
from cosface.validation import split_validation, summary

if TYPE_CHECKING:
    from cosface.evaluation import Report


@dataclass
class TrainResult:
    """What a finished run left: its directory, checkpoints and final figures."""

    out_dir: Path
    epochs_done: int
    global_step: int
    last_checkpoint: Path | None
    final_loss: float                # mean loss of the last epoch trained
    images_per_s: float              # throughput of the last epoch trained
    report: Report | None = None     # the last save's LFW evaluation (cosface.evaluation Report), if any
    best_checkpoint: Path | None = None   # best.pt with checkpoint.select = "val"
    validation: Report | None = None      # the last save's held-out validation Report, if any


def train(cfg: Config, out_dir: str | Path, resume: str | None = None, progress: bool = True,
          overwrite: bool = False) -> TrainResult:
    """Train `cfg` into `out_dir`. `resume` is None, "auto" (newest good checkpoint in out_dir, if any) or a
    path. A directory holding an earlier run is refused unless resumed or `overwrite` (moves it aside)."""
    if not cfg.data.path:
        raise CosfaceError("no training data: pass --data DIR or set data.path in the config")
    check_log_extras(cfg.log)
    runtime = setup_runtime(cfg.train.device, cfg.train.timeout_s)
    try:
        with runtime.failing_clearly(), claim_run_dir(out_dir, runtime, resume, overwrite), \
                cudnn_benchmark(cfg.train.cudnn_benchmark):
            return Trainer(cfg, Path(out_dir), runtime, progress).run(resume)
    finally:
        runtime.close()


class Trainer:
    def __init__(self, cfg: Config, out_dir: Path, runtime: Runtime, progress: bool):
        self.cfg, self.out, self.rt, self.progress = cfg, out_dir, runtime, progress
        self.ckpt_dir = out_dir / "checkpoints"
        self.finetune = FineTune(cfg.finetune, cfg.model)
        self.prep = self.finetune.preprocessing(cfg.model.input_size)
        self.bad_seen: set[str] = set()
        self.last_checkpoint: Path | None = None
        self.last_report: Report | None = None
        self.last_validation: Report | None = None

    # ---- setup -------------------------------------------------------------------------------
    def run(self, resume: str | None) -> TrainResult:
        cfg, rt = self.cfg, self.rt
        source, self.validator = split_validation(open_source(cfg.data.path), cfg.data, cfg.train.seed)
        self.class_names = list(source.class_names)
        num_classes = len(self.class_names)
        if num_classes < 2:
            # One class: the softmax has nothing to tell apart, the loss is 0 from the first step and nothing is learnt.
            held = (f" left after holding out {len(self.validator.classes)} (data.val_identities)"
                    if self.validator.enabled else "")
            raise CosfaceError(f"{cfg.data.path} has {num_classes} training class{held} ({', '.join(self.class_names)}); "
                               f"a margin loss needs at least 2 classes (identities) to learn from")
        if cfg.data.num_classes and cfg.data.num_classes != num_classes:
            raise CosfaceError(f"data.num_classes = {cfg.data.num_classes} but {cfg.data.path} has {num_classes} classes")
        ckpt = self._find_resume(resume)
        self.validator.check_resume(self.out, resuming=ckpt is not None)
        if ckpt is not None:
            self._check_fits(ckpt, num_classes)
            check_resume_config(checkpoint_config(ckpt, str(self.resumed_from)).to_dict(), cfg, self.resumed_from, self._say)
        rt.barrier()     # every rank has read the run's files (val_identities.txt) before rank 0 rewrites them
        if rt.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text(self.out / "config.toml", cfg.to_toml(), "run config")
            write_text(self.out / "classes.txt", "".join(f"{n}\n" for n in self.class_names), "class list")
            self.validator.write(self.out)
        rt.barrier()
        # What a killed run logged after its checkpoint is trained and logged again: drop it, not twice.
        resume_step = ckpt["global_step"] if ckpt is not None else (0 if resume is not None else None)
        self.logs = MetricsLog(self.out, cfg.log, rt.is_main, resume_step)
        if self.logs.dropped:
            self._say(f"{self.out / 'metrics.jsonl'}: dropped {self.logs.dropped} record(s) logged after global step "
                      f"{resume_step}, the checkpoint's; those steps are trained again")
        self._report_bad(getattr(source, "skipped", []))   # records a packed source could not open
        self.best = BestCheckpoint(self.ckpt_dir, cfg.checkpoint.select, resuming=ckpt is not None)
        # A run killed between writing a save and copying it to best.pt: the save is offered again.
        if (ckpt is not None and self.resumed_from is not None and rt.is_main
                and (best := self.best.offer(ckpt, self.resumed_from))):
            self._log({"type": "best", "global_step": ckpt["global_step"], **best})
        for note in data_warnings(source.labels, self.class_names) + self.validator.notes(cfg.data, num_classes):
            self._say(note)

        if cfg.head.sample_rate < 1 and not rt.distributed:
            self._say(f"note: head.sample_rate = {cfg.head.sample_rate} applies to the class-sharded head of "
                      f"multi-process runs; one process uses every class centre")
        torch.manual_seed(cfg.train.seed)
        backbone = build_backbone_for(cfg.model).to(rt.device)
        head = rt.build_head(cfg.head, num_classes, cfg.model.embedding_size).to(rt.device)
        self._say(self.finetune.init_weights(backbone, head, self.class_names, resuming=ckpt is not None))
        if cfg.train.channels_last:
            backbone = backbone.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit it
        self.backbone, self.head = backbone, head

        self.optimizer = self.finetune.scaled(build_optimizer(param_groups(cfg.optim, backbone, head), cfg.optim,
                                                              cuda_graph=cfg.train.cuda_graph), backbone)
        plan = Plan(len(source), cfg.train.batch_size, rt.world_size, cfg.train.accumulate)
        if plan.steps_per_epoch == 0:
            raise CosfaceError(f"{len(source)} images is less than one global batch of {plan.global_batch} "
                               f"(train.batch_size × processes × train.accumulate); lower train.batch_size")
        self.plan = plan
        self.base_lr = cfg.optim.lr * (plan.global_batch / cfg.optim.reference_batch if cfg.optim.scale_lr else 1.0)
        self.divergence = DivergenceWatch(self.base_lr)

        start_epoch, start_step, self.global_step = 0, 0, 0
        self.resumed_loss = None     # the epoch's losses before a mid-epoch save, so its mean covers the whole epoch
        if ckpt is not None:
            restore_training_state(ckpt, backbone, head, self.optimizer)
            set_rng_state(ckpt["rng"])
            self.last_checkpoint = self.resumed_from
            start_epoch, self.global_step = ckpt["epoch"], ckpt["global_step"]
            # Position inside the epoch is kept in images, so a different world size resumes at the
            # same place in the same order.
            start_step = ckpt["epoch_samples"] // plan.global_batch
            self.resumed_loss = ckpt.get("epoch_loss")
            # The divergence check picks up the logged losses the save saw (absent from older checkpoints).
            self.divergence.seed(ckpt.get("recent_losses"))
            if ckpt["epoch_samples"] % plan.global_batch:
                self._say(f"note: the saved position ({ckpt['epoch_samples']} images into epoch {start_epoch + 1}) is not a "
                          f"multiple of the new global batch {plan.global_batch}; resuming at step {start_step}")
            if start_step >= plan.steps_per_epoch:
                start_epoch, start_step = start_epoch + 1, 0
            copy = f", a copy of {ckpt['best']['copy_of']}" if isinstance(ckpt.get("best"), dict) else ""
            self._say(f"resumed from {self.resumed_from}{copy} (epoch {start_epoch + 1}, step {start_step}, "
                      f"global step {self.global_step})")

        self.model: Any = rt.wrap_backbone(backbone)
        self.autocast, self.scaler = self._amp_policy()
        self.step = build_step(cfg.train, self.optimizer, self.model, head, self.prep, self.autocast, self.scaler,
                               rt, class_chunk=cfg.head.class_chunk, clip_grad_norm=cfg.optim.clip_grad_norm)
        loader = make_loader(source, plan, rank=rt.rank, seed=cfg.train.seed, flip=cfg.data.flip,
                             image_size=cfg.model.input_size, workers=cfg.data.workers,
                             prefetch=cfg.data.prefetch, pin_memory=rt.device.type == "cuda",
                             decoder=resolve_decoder(cfg.data.decoder, rt.device, note=self._say), device=rt.device,
                             max_pixels=cfg.data.max_pixels)
        if isinstance(self.step, GraphedStep) and isinstance(loader, GpuDecodeLoader):
            self.step.capture_guard = loader.quiet     # no decoding on the GPU while the step is captured
        self._say(f"training {cfg.model.backbone} + {cfg.head.type} (s={cfg.head.s}, {margin_text(cfg.head)}) on {len(source)} images, "
                  f"{num_classes} classes, {rt.world_size} process(es) on {rt.device}; global batch {plan.global_batch}, "
                  f"{plan.steps_per_epoch} steps/epoch"
                  + (f", epochs {start_epoch + 1}..{cfg.train.epochs}" if start_epoch < cfg.train.epochs else ""))

        if start_epoch >= cfg.train.epochs:
            self._say(f"nothing to train: the checkpoint already holds {start_epoch} of train.epochs = {cfg.train.epochs}")
        loss = float("nan")
        ips = 0.0
        for epoch in range(start_epoch, cfg.train.epochs):
            loss, ips = self._train_epoch(loader, epoch, start_step)
            start_step = 0
            if self._save_due(epoch + 1):
                self._save(epoch=epoch + 1, epoch_samples=0, eval_due=True)
        self.logs.close()
        return TrainResult(self.out, cfg.train.epochs, self.global_step, self.last_checkpoint, loss, ips,
                           self.last_report, self.best.chosen, self.last_validation)

    # ---- one epoch ---------------------------------------------------------------------------
    def _train_epoch(self, loader, epoch: int, start_step: int) -> tuple[float, float]:
        cfg, rt, plan = self.cfg, self.rt, self.plan
        loader.sampler.set_epoch(epoch, start_step)
        self.model.train()
        self.head.train()
        self.finetune.begin_epoch(epoch, self.backbone, self.optimizer, start_step)
        loss_sum = torch.zeros((), device=rt.device)       # accumulated on device: no sync per step
        window_sum = torch.zeros((), device=rt.device)
        window_steps, epoch_steps = 0, 0
        steps_before, carried_steps = 0, 0   # from a mid-epoch checkpoint: steps in loss_sum, and in window_sum
        if start_step and self.resumed_loss is not None:
            loss_sum += self.resumed_loss["loss_sum"].to(rt.device)
            window_sum += self.resumed_loss["window_sum"].to(rt.device)
            steps_before, carried_steps = self.resumed_loss["steps"], self.resumed_loss["window_steps"]
        self.resumed_loss = None
        t_epoch = t_window = time.perf_counter()
        bar = self._bar(total=plan.steps_per_epoch - start_step, desc=f"epoch {epoch + 1}/{cfg.train.epochs}")
        micro = 0
        for batch in loader:
            if micro == 0:
                step = start_step + epoch_steps
                lr = learning_rate(cfg.schedule, self.base_lr, epoch + step / plan.steps_per_epoch, cfg.train.epochs)
                self.step.set_lr(lr)
            self._report_bad(batch["bad"])
            last_micro = micro == cfg.train.accumulate - 1
            loss = self._forward_backward(batch, sync=last_micro)
            window_sum += loss.detach() / cfg.train.accumulate
            micro += 1
            if not last_micro:
                continue
            micro = 0
            self._optimizer_step()
            epoch_steps += 1
            window_steps += 1
            self.global_step += 1
            if bar is not None:
                bar.update(1)
            if self.global_step % cfg.train.log_every == 0 or start_step + epoch_steps == plan.steps_per_epoch:
                mean_loss = self._checked_mean(window_sum, window_steps + carried_steps, epoch)
                now = time.perf_counter()
                self._log({"type": "step", "epoch": epoch + 1, "step": start_step + epoch_steps,
                           "global_step": self.global_step, "loss": mean_loss, "lr": lr,
                           "images_per_s": window_steps * plan.global_batch / (now - t_window)})
                if bar is not None:
                    bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.4g}")
                loss_sum += window_sum
                window_sum.zero_()
                window_steps, carried_steps, t_window = 0, 0, now
            every = cfg.checkpoint.save_every_steps
            if every and self.global_step % every == 0 and start_step + epoch_steps < plan.steps_per_epoch:
                epoch_loss = {"loss_sum": loss_sum.cpu(), "window_sum": rt.all_reduce_mean(window_sum).cpu(),
                              "window_steps": window_steps + carried_steps, "steps": steps_before + epoch_steps}
                self._save(epoch=epoch, epoch_samples=(start_step + epoch_steps) * plan.global_batch,
                           eval_due=False, unchecked_loss=window_sum, epoch_loss=epoch_loss)
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - t_epoch
        mean_loss = float(loss_sum) / max(steps_before + epoch_steps, 1)
        ips = epoch_steps * plan.global_batch / elapsed
        ms = 1000 * elapsed / max(epoch_steps, 1)
        self._say(f"epoch {epoch + 1}/{cfg.train.epochs}: epoch time {elapsed / 60:.3f} min, per step time {ms:.3f} ms, "
                  f"loss {mean_loss:.6f}, lr {lr:.6g}, {ips:.1f} img/s")
        self._log({"type": "epoch", "epoch": epoch + 1, "global_step": self.global_step, "loss": mean_loss,
                   "lr": lr, "epoch_time_s": elapsed, "step_time_ms": ms, "images_per_s": ips})
        return mean_loss, ips

    def _forward_backward(self, batch, sync: bool) -> torch.Tensor:
        dev = self.rt.device
        nb = dev.type == "cuda"
        images = batch["images"].to(dev, non_blocking=nb)
        labels = batch["labels"].to(dev, non_blocking=nb)
        flips = batch["flips"].to(dev, non_blocking=nb)
        return self.step.forward_backward(images, labels, flips, sync)

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.rt.share_overflow(self.head.parameters())   # the sharded head's gradients differ per rank
        clip_gradients(self.cfg.optim, self.backbone, self.optimizer, self.scaler)
        self.step.optimizer_step()

    def _amp_policy(self):
        amp, dev = self.cfg.train.amp, self.rt.device
        if amp == "none":
            return contextlib.nullcontext, None
        if dev.type != "cuda" and amp == "fp16":
            raise CosfaceError("train.amp = 'fp16' needs a CUDA device; use 'bf16' or 'none' on CPU")
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
        return (lambda: torch.autocast(dev.type, dtype=dtype)), scaler

    def _checked_mean(self, window_sum: torch.Tensor, steps: int, epoch: int) -> float:
        """The window's mean loss over all ranks; the one host sync of a logging interval."""
        value = float(self.rt.all_reduce_mean(window_sum)) / max(steps, 1)
        if not math.isfinite(value):
            last = self.last_checkpoint or "none was written"
            raise CosfaceError(f"loss became {value} in epoch {epoch + 1} (global step {self.global_step}); "
                               f"stopping. Last good checkpoint: {last}. Try a lower optim.lr or train.amp = 'none'")
        self.divergence.check(value, self.global_step)
        return value

    # ---- saving, evaluation, logging -------------------------------------------------------------
    def _save_due(self, epochs_done: int) -> bool:
        c = self.cfg.checkpoint
        on_cadence = epochs_done >= c.save_start_epoch and (epochs_done - c.save_start_epoch) % c.save_every_epochs == 0
        return on_cadence or epochs_done == self.cfg.train.epochs

    def _save(self, epoch: int, epoch_samples: int, eval_due: bool, unchecked_loss: torch.Tensor | None = None,
              epoch_loss: dict | None = None) -> None:
        state = training_state(self.backbone, self.head, self.optimizer)  # collective: all ranks
        self._check_finite(state, unchecked_loss, epoch if epoch_samples == 0 else epoch + 1)
        evaluation = self._evaluate(epoch) if eval_due else None
        validation = self._validate(epoch) if eval_due else None
        if self.rt.is_main:
            name = checkpoint_name(epoch) if epoch_samples == 0 else checkpoint_name(epoch + 1, self.global_step)
            path = self.ckpt_dir / name
            payload = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(),
                "config": portable_config(self.cfg.to_dict()), "num_classes": len(self.class_names), "class_names": self.class_names,
                "preprocessing": self.prep.to_dict(), "epoch": epoch, "epoch_samples": epoch_samples,
                "global_step": self.global_step, "world_size": self.rt.world_size, "rng": rng_state(),
                "evaluation": evaluation, "validation": validation, "epoch_loss": epoch_loss,
                "recent_losses": self.divergence.state(), **state,
            }
            atomic_save(payload, path)
            self.last_checkpoint = path
            # Numbered like the step records and the file name: a save inside epoch N says N, not N - 1.
            self._log({"type": "checkpoint", "epoch": epoch if epoch_samples == 0 else epoch + 1,
                       "global_step": self.global_step, "path": str(path)})
            if best := self.best.offer(payload, path):
                self._log({"type": "best", "global_step": self.global_step, **best})
            self._prune(path)
        self.rt.barrier()

    def _validate(self, epoch: int) -> dict | None:
        if not (self.validator.enabled and self.rt.is_main):
            return None
        from cosface.evaluation import torch_embed_fn

        report = self.validator.evaluate(torch_embed_fn(self.backbone, self.rt.device, self.prep), size=self.prep.size,
                                         batch_size=self.cfg.eval.batch_size)
        self.last_validation, numbers = report, summary(report)
        self._say(f"epoch {epoch}: validation ({len(report.issame)} pairs of held-out identities) mean accuracy "
                  f"{100 * report.mean:.2f} % (std {100 * report.std:.2f}), AUC {report.auc:.4f}")
        self._log({"type": "val", "epoch": epoch, "global_step": self.global_step,
                   **{f"val_{k}": v for k, v in numbers.items()}})
        return numbers

    def _check_finite(self, state: dict, unchecked_loss: torch.Tensor | None, epoch_number: int) -> None:
        """Never write a broken model: weights, optimizer state and the losses since the last logged
        check must all be finite (agreed over ranks), else stop naming the last good checkpoint."""
        bad = nonfinite_entries(state)
        loss_bad = unchecked_loss is not None and not bool(torch.isfinite(unchecked_loss))
        flag = self.rt.all_reduce_mean(torch.tensor(float(bool(bad) or loss_bad), device=self.rt.device))
        if float(flag) == 0:
            return
        what = f"non-finite values in {bad[0]}" if bad else "a non-finite loss"
        last = self.last_checkpoint or "none was written"
        raise CosfaceError(f"the model has {what} at global step {self.global_step} (epoch {epoch_number}); it was not "
                           f"saved and training stops. Last good checkpoint: {last}. Try a lower optim.lr or "
                           f"train.amp = 'none'")

    def _evaluate(self, epoch: int) -> dict | None:
        lfw = self.cfg.eval.lfw
        if not lfw or not self.rt.is_main:
            return None
        from cosface.evaluation import evaluate_lfw, torch_embed_fn
        from cosface.evaluation.metrics import thresholds_at_fars
        from cosface.evaluation.protocol import best_threshold

        self.backbone.eval()
        try:
            report = evaluate_lfw(torch_embed_fn(self.backbone, self.rt.device, self.prep), lfw,
                                  batch_size=self.cfg.eval.batch_size, progress=False)
        finally:
            self.backbone.train()
        self._say(f"epoch {epoch}: LFW ({report.protocol}) mean accuracy {100 * report.mean:.2f} % "
                  f"(std {100 * report.std:.2f})")
        self._log({"type": "eval", "epoch": epoch, "global_step": self.global_step, "protocol": report.protocol,
                   "lfw_mean": report.mean, "lfw_std": report.std, "lfw_folds": list(report.folds),
                   "lfw_auc": report.auc, "lfw_tar_at_far": {f"{f:g}": t for f, t in report.tar_at_far.items()}})
        self.last_report = report
        return {"protocol": report.protocol, "mean": report.mean, "std": report.std,
                "thresholds": [float(t) for t in report.thresholds], "dataset": portable_path(lfw),
                # For `cosface verify`: chosen on the same plain flip-concatenated cosine it computes
                # (the protocol's own thresholds assume a fold mean subtracted first).
                "verify_threshold": best_threshold(report.scores, report.issame),
                "far_thresholds": thresholds_at_fars(report.scores, report.issame)}   # same similarity; None: not measurable

    def _prune(self, saved: Path) -> None:
        """Keep the `keep_last` newest saves up to `saved`. Files that sort after it (left by an earlier run
        that was resumed from an older checkpoint, or a broken one --resume auto skipped) are not counted:
        they must not push out the save just written."""
        keep = self.cfg.checkpoint.keep_last
        if keep:
            ours = list_checkpoints(self.ckpt_dir)
            for old in ours[:ours.index(saved) + 1][:-keep]:
                old.unlink(missing_ok=True)

    def _find_resume(self, resume: str | None) -> dict | None:
        self.resumed_from = None
        if resume is None:
            return None
        if resume == "auto":
            # Rank 0 chooses, so every rank loads the same file even if a save was in flight.
            found, error = None, None
            if self.rt.is_main:
                try:
                    found = latest_good_checkpoint(self.ckpt_dir, say=self._say, fallback=self.ckpt_dir / BEST_NAME)
                except CosfaceError as e:
                    error = str(e)
            chosen, error = self.rt.broadcast_object((str(found[0]) if found else None, error))
            if error is not None:
                raise CosfaceError(error)
            if chosen is None:
                self._say(f"--resume auto: no checkpoint in {self.ckpt_dir}; starting from scratch")
                return None
            self.resumed_from = Path(chosen)
            if found is not None:        # rank 0 has read and checked it already
                return found[1]
        else:
            self.resumed_from = Path(resume)
        path = self.resumed_from
        ckpt = load_checkpoint(path)
        problem = checkpoint_problem(ckpt)
        if problem:
            raise CosfaceError(f"checkpoint {path} cannot be resumed: it holds {problem}; resume from an earlier "
                               f"one (--resume auto picks the newest good checkpoint)")
        return ckpt

    def _check_fits(self, ckpt: dict, num_classes: int) -> None:
        old = checkpoint_config(ckpt, str(self.resumed_from))
        if ckpt["num_classes"] != num_classes or list(ckpt["class_names"]) != self.class_names:
            raise CosfaceError(f"checkpoint {self.resumed_from} was trained on {ckpt['num_classes']} classes, but "
                               f"{self.cfg.data.path} has {num_classes} (or other class names); it cannot resume here")
        # The architecture must match; training policy (margin, scale, sampling, lr...) may change.
        fixed = [(f"model.{k}", getattr(old.model, k), getattr(self.cfg.model, k)) for k in old.model.__dataclass_fields__]
        fixed.append(("head.type", old.head.type, self.cfg.head.type))
        diff = [f"{key} is {a!r} there, {b!r} here" for key, a, b in fixed if a != b]
        if diff:
            raise CosfaceError(f"checkpoint {self.resumed_from} does not fit this config: " + ", ".join(diff))
        # head.init / init_std only shape a new table; the centres come from the checkpoint.
        changed = [f"head.{k} {getattr(old.head, k)!r} -> {getattr(self.cfg.head, k)!r}"
                   for k in old.head.__dataclass_fields__
                   if k not in ("init", "init_std") and getattr(old.head, k) != getattr(self.cfg.head, k)]
        if changed:
            self._say(f"note: resuming with a changed head policy: {', '.join(changed)}")
        if missing_training_state(ckpt):
            raise CosfaceError(f"checkpoint {self.resumed_from} holds no training state to resume from")

    def _report_bad(self, bad: list[str]) -> None:
        new = [b for b in bad if b not in self.bad_seen]
        if not new:
            return
        self.bad_seen.update(new)
        prefix = f"[rank {self.rt.rank}] " if self.rt.distributed else ""
        shown = "; ".join(new[:3]) + (f"; and {len(new) - 3} more" if len(new) > 3 else "")
        print(f"{prefix}warning: skipped {len(new)} unreadable file(s) (replaced by the next image; "
              f"{len(self.bad_seen)} so far): {shown}", file=sys.stderr, flush=True)
        if self.rt.is_main:
            self._log({"type": "unreadable", "files": new, "total": len(self.bad_seen)})

    def _bar(self, total: int, desc: str):
        if not (self.progress and self.rt.is_main):
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True, file=sys.stderr)

    def _say(self, msg: str | None) -> None:
        if msg and self.rt.is_main:
            print(msg, flush=True)

    def _log(self, record: dict) -> None:
        self.logs.write(record)
