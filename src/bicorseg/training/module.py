"""The LightningModule: BiCoR-Seg, its objective, the optimizer, validation metrics, NaN handling.

Training steps take every output of :meth:`BiCoRSeg.forward_train` to the full objective (at the
model's working resolution, the labels pooled to it);
validation, like any caller, takes the logits of ``model(x)``. The network is the attribute ``model``
so that its weights land in Lightning checkpoints with the prefix ``model.``;
:meth:`on_save_checkpoint` adds the metadata of :func:`bicorseg.checkpoint.metadata` under
``"bicorseg"`` (plus the training config), so :func:`bicorseg.load_model` reads these files.

Every term of :class:`BiCoRSegLoss` is logged (``train/<term>``), averaged over processes. Validation
accumulates one confusion matrix per epoch, summed across processes, and logs ``val/miou``,
``val/mean_f1``, ``val/oa``, per-class IoU and ``val/period4_share`` (the share of the predicted
maps that is a 4-pixel pattern: :class:`bicorseg.metrics.PeriodicShare`).

A non-finite loss or gradient stops training with an error naming the step (``nan_policy: stop``)
or drops the batch (``skip``). A checkpoint is never written from non-finite weights.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch

from bicorseg.defaults import DEFAULT_OVERLAP
from bicorseg.errors import BicorsegError
from bicorseg.evaluation import data_protocol
from bicorseg.losses import BiCoRSegLoss, pool_labels
from bicorseg.metrics import ConfusionMatrix, Convention, EvaluationReport, PeriodicShare, write_report_json
from bicorseg.models import BiCoRSeg
from bicorseg.models.hub import Tiling, metadata
from bicorseg.spec import DatasetSpec
from bicorseg.training.config import TrainConfig
from bicorseg.training.lookahead import Lookahead


class NonFiniteError(BicorsegError):
    """Training met a NaN or infinite loss or gradient under ``nan_policy: stop``."""


def _metric_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "class"


class BiCoRSegModule(L.LightningModule):
    """Trains ``model`` (a :class:`BiCoRSeg`, built from the config unless given) with the full objective."""

    def __init__(
        self,
        config: TrainConfig,
        spec: DatasetSpec,
        model: BiCoRSeg | None = None,
        output_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.spec = spec
        self.model = model if model is not None else BiCoRSeg(config.model, dataset=spec)
        self.criterion = BiCoRSegLoss(config.loss)
        self.val_confmat = ConfusionMatrix(spec.num_classes, spec.ignore_index)
        self.val_pattern = PeriodicShare(spec.num_classes)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.skipped_batches = 0
        self.last_val_report: EvaluationReport | None = None
        self._skip_this_step = False
        self._batch_idx = 0

    # --- training -------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images = batch["image"]
        masks = pool_labels(batch["mask"], self.model.config.downsample, self.config.loss.ignore_index)
        terms = self.criterion(self.model.forward_train(images), masks)
        total = terms["total"]
        self._skip_this_step = False
        self._batch_idx = batch_idx
        local_bad = not bool(torch.isfinite(total.detach()).item())
        if self.trainer.strategy.reduce_boolean_decision(local_bad, all=False):
            bad = sorted(k for k, v in terms.items() if not torch.isfinite(v.detach()).all())
            self._non_finite(f"loss ({', '.join(bad) or 'on another process'})", batch_idx)
            # skip: a zero loss that reaches every parameter keeps the processes' backward in step;
            # the gradients are then discarded in on_before_optimizer_step.
            return sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0
        size = images.shape[0]
        for key, value in terms.items():
            self.log(
                f"train/{key}",
                value.detach(),
                on_step=True,
                on_epoch=True,
                sync_dist=True,
                batch_size=size,
                prog_bar=key == "total",
            )
        return total

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not self._skip_this_step and params:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
            if not bool(torch.isfinite(norm).item()):  # gradients are already reduced across processes
                self._non_finite("gradient", self._batch_idx)
        if self._skip_this_step:
            for p in self.model.parameters():
                p.grad = None  # AdamW (and Lookahead) leave parameters without gradients untouched
            self._skip_this_step = False

    def _non_finite(self, what: str, batch_idx: int) -> None:
        where = f"step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
        if self.config.trainer.nan_policy == "stop":
            raise NonFiniteError(
                f"non-finite {what} at {where}: training stopped; the checkpoints on disk predate this "
                "step (set trainer.nan_policy: skip to drop such batches instead)"
            )
        self._skip_this_step = True
        self.skipped_batches += 1
        self.print(f"bicorseg: non-finite {what} at {where}: batch skipped ({self.skipped_batches} so far)")
        self.log("train/skipped_batches", float(self.skipped_batches), on_step=True, on_epoch=False)

    # --- validation -----------------------------------------------------------------------------

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.model(batch["image"])
        masks = batch["mask"]
        softce, dice = self.criterion.segmentation(logits.float(), masks)
        self.log("val/loss", softce + dice, on_epoch=True, sync_dist=True, batch_size=masks.shape[0])
        classes = logits.argmax(dim=1)
        self.val_confmat.update(classes, masks)
        self.val_pattern.update(classes)

    def on_validation_epoch_end(self) -> None:
        matrix = self.val_confmat.compute()  # summed over processes
        pattern = float(self.val_pattern.compute())
        self.val_confmat.reset()
        self.val_pattern.reset()
        report = EvaluationReport.from_confusion(
            matrix,
            self.spec.class_names,
            self.spec.eval_classes,
            Convention(
                self.spec.name,
                split=self.config.data.val_split or "",
                label_variant=self.spec.label_variant,
                mode="patches (validation during training)",
                tta="none",
                protocol=data_protocol(self.trainer.datamodule.val_set),
                extra={"epoch": self.current_epoch, "step": self.global_step},
            ),
            period4_share=pattern,
        )
        scores = report.scores
        values = {"val/miou": scores.miou, "val/mean_f1": scores.mean_f1, "val/oa": scores.oa,
                  "val/period4_share": pattern}  # fmt: skip
        for index, name in enumerate(self.spec.class_names):
            values[f"val/iou_{_metric_name(name)}"] = float(scores.iou[index])
        for key, value in values.items():
            # identical on every process already; NaN (nothing to score) is logged as 0
            self.log(
                key,
                0.0 if math.isnan(value) else value,
                on_epoch=True,
                sync_dist=False,
                prog_bar=key == "val/miou",
            )
        self.last_val_report = report
        if self.output_dir is not None and self.trainer.is_global_zero:
            write_report_json(report, self.output_dir / "val_metrics.json")

    # --- optimizer ------------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        cfg = self.config.optimizer
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay
        )
        if cfg.lookahead:
            optimizer = Lookahead(
                optimizer, k=cfg.lookahead_k, alpha=cfg.lookahead_alpha, phase=cfg.lookahead_phase
            )
        if cfg.schedule == "constant" or self.config.schedule_per_step:
            return optimizer  # per step, the run's RunBudget sets the rate (bicorseg.training.budget)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=self.config.trainer.max_epochs, eta_min=cfg.min_lr
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # --- checkpoints ----------------------------------------------------------------------------

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A resumed run with another trainer.max_epochs: its cosine goes on from the current rate to
        # the new last epoch (with the saved length it would end unannealed, or climb again past it).
        for state in checkpoint.get("lr_schedulers") or []:
            if isinstance(state, dict) and "T_max" in state:
                state["T_max"] = self.config.trainer.max_epochs

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for name, tensor in self.model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise NonFiniteError(
                    f"refusing to write a checkpoint at step {self.global_step}: weight {name} is not finite"
                )
        tiling = Tiling(self.config.data.crop_size, DEFAULT_OVERLAP, "checkpoint")  # the size it trains on
        checkpoint["bicorseg"] = {**metadata(self.model, tiling), "train_config": self.config.to_dict()}
