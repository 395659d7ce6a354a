"""--report_to tensorboard: event files under ``<output_dir>/tensorboard``, written with the
``tensorboard`` package's own event writer (no torch, no TensorFlow)."""
from __future__ import annotations

import json
import time
from pathlib import Path


class TensorBoardWriter:
    def __init__(self, run_name: str, output_dir: Path):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self.log_dir = Path(output_dir) / "tensorboard"
        self._writer = EventFileWriter(str(self.log_dir), filename_suffix=f".{run_name}")
        self._last_step = 0

    def _add(self, scalars: dict, step: int) -> None:
        values = [self._summary.Value(tag=tag, simple_value=float(v)) for tag, v in scalars.items()]
        self._writer.add_event(self._event(wall_time=time.time(), step=int(step),
                                           summary=self._summary(value=values)))
        self._writer.flush()

    def log_params(self, params: dict) -> None:
        text = "\n".join(f"    {k}: {json.dumps(v)}" for k, v in sorted(params.items()))
        from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[text.encode()],
                                        tensor_shape=tensor_shape_pb2.TensorShapeProto())
        metadata = self._summary_metadata()
        self._writer.add_event(self._event(wall_time=time.time(), step=0, summary=self._summary(
            value=[self._summary.Value(tag="hparams/text_summary", tensor=tensor, metadata=metadata)])))

    def _summary_metadata(self):
        from tensorboard.compat.proto import summary_pb2
        return summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))

    def log_scalars(self, scalars: dict, step: int) -> None:
        self._last_step = max(self._last_step, int(step))
        self._add(scalars, step)

    def log_summary(self, scalars: dict) -> None:
        self._add(scalars, self._last_step)

    def close(self) -> None:
        self._writer.close()


def open(run_name: str, output_dir: Path) -> TensorBoardWriter:  # noqa: A001 (the registry's entry point)
    return TensorBoardWriter(run_name, output_dir)
