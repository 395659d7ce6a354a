"""--report_to mlflow: MLFLOW_TRACKING_URI when set, else a local file store under
``<output_dir>/mlruns``; experiment ``squad-bench`` (MLFLOW_EXPERIMENT_NAME overrides), run
named after the run folder."""
from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class MlflowWriter:
    def __init__(self, run_name: str, output_dir: Path):
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # MLflow 3 refuses the file store unless asked: a local store is what we want by default.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (Path(output_dir).resolve() / "mlruns").as_uri()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "squad-bench")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        self.tracking_uri = uri
        self._last_step = 0
        logger.info("mlflow: run %s (%s) at %s", run_name, self.run_id, uri)

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_scalars(self, scalars: dict, step: int) -> None:
        import time

        from mlflow.entities import Metric

        self._last_step = max(self._last_step, int(step))
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, int(step)) for k, v in scalars.items()])

    def log_summary(self, scalars: dict) -> None:
        self.log_scalars(scalars, self._last_step)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def open(run_name: str, output_dir: Path) -> MlflowWriter:  # noqa: A001 (the registry's entry point)
    return MlflowWriter(run_name, output_dir)
