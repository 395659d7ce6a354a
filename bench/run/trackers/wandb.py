"""--report_to wandb: Weights & Biases, offline unless the user configured it.

WANDB_MODE set: respected. Unset, and no credentials (WANDB_API_KEY, or an api key in ~/.netrc
for the W&B host): offline, so a run never hangs on a login prompt; the offline run folder is
logged with the ``wandb sync`` command that uploads it. Files go under ``<output_dir>/wandb``
unless WANDB_DIR is set. Project: WANDB_PROJECT, else ``squad-bench``.
"""
from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (OSError, netrc.NetrcParseError):
        return False
    base = os.environ.get("WANDB_BASE_URL", "api.wandb.ai").split("://")[-1].split("/")[0]
    return base in hosts


class WandbWriter:
    def __init__(self, run_name: str, output_dir: Path):
        import wandb

        mode = os.environ.get("WANDB_MODE") or ("online" if _has_credentials() else "offline")
        folder = Path(os.environ.get("WANDB_DIR") or Path(output_dir).resolve())
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "squad-bench"), name=run_name,
                              dir=str(folder), mode=mode, reinit="create_new",
                              settings=wandb.Settings(silent=True, console="off"))
        self.mode = mode
        self.sync_dir = getattr(self.run.settings, "sync_dir", None)
        if mode == "offline":
            logger.info("wandb: offline (WANDB_MODE unset, no credentials); run folder %s; upload it later with: "
                        "wandb sync %s", self.sync_dir, self.sync_dir)

    def log_params(self, params: dict) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_scalars(self, scalars: dict, step: int) -> None:
        self.run.log(dict(scalars), step=int(step))

    def log_summary(self, scalars: dict) -> None:
        for key, value in scalars.items():
            self.run.summary[key] = value

    def close(self) -> None:
        self.run.finish()
        if self.mode == "offline" and self.sync_dir:
            logger.info("wandb: offline run saved in %s; upload it with: wandb sync %s", self.sync_dir,
                        self.sync_dir)


def open(run_name: str, output_dir: Path) -> WandbWriter:  # noqa: A001 (the registry's entry point)
    return WandbWriter(run_name, output_dir)
