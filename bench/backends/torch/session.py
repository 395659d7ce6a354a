"""One process of a run on the torch backend: the ``bench.run.backend.Session`` contract.

The shared stage driver (``bench.run.driver``) calls it for the model, the optimizer step
(``TorchSteps``), the predict function and the run's facts; communication (one process,
torchrun/DDP, Horovod) is ``bench.backends.torch.dist``.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import resource
from pathlib import Path

import numpy as np
import torch

from bench.backends.torch.cpu_kernels import kernels_version, training_kernels
from bench.backends.torch.dist import init_comm
from bench.backends.torch.inference import predict_windows
from bench.backends.torch.modeling import build_qa_model, inference_model, load_tokenizer, resolve_model_source
from bench.backends.torch.steps import TorchSteps, load_for_eval
from bench.core.losses import loss_setting
from bench.run.backend import LoadedModel, TrainingSetup
from bench.run.cpu import threads_per_process, warn_if_emulated_bf16
from bench.run.distributed import detect_world, eval_shard
from bench.run.helpers import EvalBatching, progress_factory
from bench.run.record import RunFacts, hardware_info, library_versions

__all__ = ["TorchSession", "autocast_factory", "parameter_digest", "LIBRARIES"]

LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "horovod")


def autocast_factory(dtype: str, device: torch.device):
    """A zero-argument factory of autocast contexts for --dtype (float32/int8: no autocast)."""
    torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch_dtype)


def parameter_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter's bytes, in name order (identical only for identical weights)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode("utf-8"))
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class TorchSession:
    """Device, communication and seeds of this process."""

    def __init__(self, config):
        self.world = detect_world(config.comm_backend, config.gpus)
        self.comm = init_comm(self.world)
        self.device = self.comm.device
        if self.device.type == "cpu" and self.world.local_world_size > 1 and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(threads_per_process(self.world.local_world_size))
        torch.manual_seed(config.seed + self.comm.rank)
        np.random.seed(config.seed)
        self.rank, self.world_size, self.is_main = self.comm.rank, self.comm.world_size, self.comm.is_main
        self.on_cpu = self.device.type == "cpu"
        self.trains_on_cpu = self.on_cpu and config.do_train      # CPU training asks for our attention kernel
        warn_if_emulated_bf16(config.dtype, self.device.type, main=self.is_main)
        self.launcher, self.device_label = self.world.launcher, str(self.device)

    def barrier(self) -> None:
        self.comm.barrier()

    def close(self) -> None:
        self.comm.shutdown()

    # -- model ---------------------------------------------------------------------------------
    def load_model(self, config) -> LoadedModel:
        from bench.backends.torch.checkpoint import load_model_weights
        from bench.run.model_source import check_window_fits, param_checkpoint_file

        source = resolve_model_source(config.model_name, config.model_path)
        check_window_fits(source, config.max_seq_length)
        # Checked before the model is built: a missing or pickled file fails in one line naming the flag.
        weights = param_checkpoint_file(config.param_checkpoint) if config.param_checkpoint else None
        tokenizer = load_tokenizer(source)
        model = build_qa_model(source, head=config.head, dropout=config.classifier_dropout,
                               backbone_path=config.backbone_path, loss=loss_setting(config),
                               backbone_dropout=config.backbone_dropout)
        if weights is not None:
            load_model_weights(model, weights, label=f"--param_checkpoint {weights}")
        model = model.to(self.device)
        if config.compile:
            # In place: parameter names (and so checkpoints and layer-wise decay) stay unchanged.
            model.backbone.compile(dynamic=True)
        return LoadedModel(source=source, tokenizer=tokenizer, model=model, family=model.family,
                           num_parameters=int(sum(p.numel() for p in model.parameters())))

    def training_steps(self, config, loaded: LoadedModel, setup: TrainingSetup) -> TorchSteps:
        return TorchSteps(config, loaded.model, self.comm, setup, autocast_factory(config.dtype, self.device),
                          loaded.pad_id)

    def parameter_digest(self, loaded: LoadedModel) -> str:
        return parameter_digest(loaded.model)

    # -- evaluation ----------------------------------------------------------------------------
    def predict(self, config, loaded: LoadedModel, features, checkpoint: Path | None) -> dict | None:
        """Each rank predicts a contiguous block of windows; rank 0 gets them all, in feature order."""
        if checkpoint is not None:
            load_for_eval(loaded.model, checkpoint)
        # A copy for int8 and CPU bfloat16, freed when this returns (before the next checkpoint loads).
        eval_model, eval_dtype = inference_model(loaded.model, config.dtype)
        local = eval_shard(len(features), self.rank, self.world_size)
        bar = progress_factory("eval", "window")(len(local)) if self.is_main else None
        outputs = predict_windows(eval_model, features, local, EvalBatching.from_config(config, loaded.pad_id),
                                  device=self.device, autocast=autocast_factory(eval_dtype, self.device)(),
                                  progress=bar)
        if bar is not None:
            bar.close()
        return self.comm.gather_arrays_to_main(outputs)

    # -- facts ---------------------------------------------------------------------------------
    def facts(self) -> RunFacts:
        on_gpu = self.device.type == "cuda"
        if on_gpu:
            memory = {"peak_bytes": int(torch.cuda.max_memory_allocated(self.device)), "kind": "cuda"}
        else:
            memory = {"peak_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "kind": "rss"}
        hardware = hardware_info(torch.cuda.get_device_name(self.device) if on_gpu else None,
                                 torch.cuda.device_count() if on_gpu else 0)
        kernels = kernels_version(training_kernels()) if self.trains_on_cpu else "not used"
        return RunFacts(memory=memory, versions={**library_versions(LIBRARIES), "cpu_kernels": kernels},
                        hardware=hardware)
