"""One process of a run on the MXNet backend: the ``bench.run.backend.Session`` contract.

The shared stage driver (``bench.run.driver``) calls it for the model (a Gluon encoder with the
Hugging Face folder's weights and a registered head), the optimizer step (``MxSteps``), the
predict function and the run's facts. Everything framework-free is the core's and the run
layer's. Launch commands::

    python -m bench.run_squad --backend mxnet --model_name google_electra_small --do_train --do_eval ...
    python -m bench.run_squad --backend mxnet --gpus -1 ...            # CPU (the pip wheel is CPU-only)
    horovodrun -np 2 -H localhost:2 python -m bench.run_squad --backend mxnet --comm_backend horovod ...

One process, or one per GPU (or CPU slot) under horovodrun (``bench.backends.mxnet.dist``):
``refuse_other_launchers`` and ``refuse_dtype`` say what is refused and why.
"""
from __future__ import annotations

import logging
import resource
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from bench.backends.mxnet.checkpoint import load_model_weights
from bench.backends.mxnet.compat import import_mxnet
from bench.backends.mxnet.dist import open_comm
from bench.backends.mxnet.convert import (ConversionError, assign_params, base_model_state, convert_state,
                                         encoder_config_from_hf, hf_name_map, read_hf_config, read_safetensors)
from bench.backends.mxnet.heads import build_qa_model
from bench.backends.mxnet.encoders import use_training_kernels
from bench.backends.mxnet.cpu_kernels import describe_kernels, kernels_version, training_kernels
from bench.backends.mxnet.inference import predict_windows
from bench.backends.mxnet.optim import apply_rules, build_trainer, parameter_rules, trainable_params
from bench.backends.mxnet.steps import MxSteps, parameter_digest
from bench.core.families import get_family
from bench.core.flags import ConfigError
from bench.core.losses import loss_setting
from bench.run.backend import LoadedModel, TrainingSetup
from bench.run.checkpoints import MODEL_FILE, require_safetensors, without_backbone_prefix
from bench.run.distributed import (HOROVODRUN_HINT, TORCHRUN_BACKENDS, DistributedConfigError, detect_world,
                                   eval_shard, parse_gpus)
from bench.run.helpers import EvalBatching, progress_factory
from bench.run.model_source import load_tokenizer, resolve_model_folder
from bench.run.record import RunFacts, hardware_info, library_versions

mx, _ = import_mxnet()

logger = logging.getLogger("bench.run")

__all__ = ["MxSession", "refuse_other_launchers", "refuse_dtype", "choose_context", "load_model"]

LIBRARIES = ("mxnet", "gluonnlp", "transformers", "tokenizers", "safetensors", "numpy", "horovod")
HOROVOD_ONLY_REASON = (
    "--backend mxnet runs several processes only under horovodrun (Horovod's MXNet API); torchrun and the "
    "device workers are torch.distributed processes, which cannot exchange MXNet gradients. Run "
    f"{HOROVODRUN_HINT} --backend mxnet (one process per GPU), one process with --comm_backend device "
    "--gpus 0 (or --gpus -1 for the CPU), or --backend torch")


# ---------------------------------------------------------------------------------------- setup
def refuse_other_launchers(config) -> None:
    """--comm_backend torchrun/dist/dist_sync_device, or device with several --gpus: refused, saying why and
    what to run instead (--comm_backend horovod under horovodrun is the multi-process path)."""
    if config.comm_backend in TORCHRUN_BACKENDS:
        raise DistributedConfigError(f"--comm_backend {config.comm_backend}: {HOROVOD_ONLY_REASON}")
    if config.comm_backend == "device" and len(parse_gpus(config.gpus)) > 1:
        raise DistributedConfigError(f"--gpus {config.gpus} asks for several GPUs: {HOROVOD_ONLY_REASON}")


def refuse_dtype(config, on_gpu: bool) -> None:
    """float16 needs a GPU (MXNet AMP); bfloat16 and int8 have no path in this backend."""
    if config.dtype in ("bfloat16", "int8"):
        raise ConfigError(f"--dtype {config.dtype} is not supported by --backend mxnet (MXNet 1.9 AMP does "
                          f"float16 on GPUs only; no int8 evaluation path). Use --dtype float32, or "
                          f"--backend torch for {config.dtype}")
    if config.dtype == "float16" and not on_gpu:
        raise ConfigError("--dtype float16 with --backend mxnet needs a GPU (MXNet AMP), but this run is on the "
                          "CPU (the mxnet pip wheel is CPU-only, or --gpus -1). Use --dtype float32, or "
                          "--backend torch for float16 autocast on the CPU")


def choose_context(gpu: int | None, gpus_flag: str):
    """mx.gpu(gpu) (``WorldInfo.gpu``: --gpus id, or the local rank's GPU under horovodrun) when MXNet sees a
    GPU; otherwise the CPU (with a warning if a GPU was asked)."""
    if gpu is None:
        return mx.cpu()
    if mx.context.num_gpus() == 0:
        logger.warning("--gpus %s but MXNet sees no GPU (the mxnet pip wheel is CPU-only): running on the CPU",
                       gpus_flag)
        return mx.cpu()
    return mx.gpu(gpu)


def init_amp(config) -> bool:
    """--dtype float16 on a GPU: MXNet AMP, set up before the model is built (it patches operators).

    Untested here: the mxnet wheel this project installs is CPU-only.
    """
    if config.dtype != "float16":
        return False
    from mxnet.contrib import amp

    amp.init(target_dtype="float16")
    return True


# ---------------------------------------------------------------------------------------- model
def load_model(config, ctx, kernels=None) -> tuple:
    """(source, tokenizer, GluonQAModel): pretrained backbone, fresh head (a fine-tuned
    ``*ForQuestionAnswering`` folder with --head basic: its trained ``qa_outputs``); then --backbone_path
    and --param_checkpoint (torch-named safetensors) over it, as the torch backend does. ``kernels``: our CPU
    training kernels (``cpu_kernels.training_kernels()``) for its training graphs, or None."""
    from bench.run.model_source import check_window_fits, param_checkpoint_file

    source = resolve_model_folder(config.model_name, config.model_path)
    check_window_fits(source, config.max_seq_length)
    # Checked before the model is built: a missing or pickled file fails in one line naming the flag.
    weights = param_checkpoint_file(config.param_checkpoint) if config.param_checkpoint else None
    tokenizer = load_tokenizer(source)
    # --backbone_dropout replaces config.json's rates under the family's own keys, as the torch backend does.
    hf = {**read_hf_config(source.folder), **get_family(source.family).dropout_overrides(config.backbone_dropout)}
    encoder_config = encoder_config_from_hf(hf, where=source.source)
    model = build_qa_model(encoder_config, head=config.head, dropout=config.classifier_dropout,
                           loss=loss_setting(config),
                           init_std=hf.get("initializer_range", 0.02), ctx=ctx)
    weights_in_folder = read_safetensors(source.folder)
    state = base_model_state(weights_in_folder, encoder_config.family)
    assign_params(model.backbone, convert_state(encoder_config, state, where=source.source), where=source.source)
    _load_trained_qa_head(model, config.head, hf, weights_in_folder, source.source)
    if config.backbone_path:
        load_backbone_file(model, Path(config.backbone_path))
    if weights is not None:
        load_model_weights(model, weights)
    use_training_kernels(model, kernels)
    # Cached graphs with dynamic shapes (every batch has its own length); static_alloc measured slower.
    model.hybridize()
    return source, tokenizer, model


def _load_trained_qa_head(model, head: str, hf: dict, state: dict, where: str) -> None:
    """A ``*ForQuestionAnswering`` folder's ``qa_outputs`` into the basic head's span scorer (the torch
    backend's ``hf_backbone.load_trained_qa_head``: same rule, same messages)."""
    architecture = next((name for name in hf.get("architectures") or () if isinstance(name, str)
                         and name.endswith("ForQuestionAnswering")), None)
    if architecture is None:
        return
    if head != "basic":
        logger.warning("%s is a fine-tuned %s: its trained head is a basic head (qa_outputs), so --head %s "
                       "starts untrained; pass --head basic to use the trained one", where, architecture, head)
        return
    missing = [name for name in ("qa_outputs.weight", "qa_outputs.bias") if name not in state]
    if missing:
        raise ConversionError(f"{where} ({architecture}): the weights lack the trained QA head's "
                              f"{', '.join(missing)}")
    # Gluon's Dense(2) holds weight (2, H) like torch's Linear: row 0 start, row 1 end.
    assign_params(model.head.span_scores, {"weight": state["qa_outputs.weight"], "bias": state["qa_outputs.bias"]},
                  where=f"{where} qa_outputs")
    logger.info("%s: loaded the trained basic head of the %s (qa_outputs)", where, architecture)


def load_backbone_file(model, path: Path) -> None:
    """--backbone_path: backbone weights in HF names (or ``backbone.*`` from a whole QA model), strictly."""
    require_safetensors(path, f"--backbone_path {path}", ConversionError)
    state = base_model_state(without_backbone_prefix(load_file(str(path))), model.family)
    unexpected = sorted(set(state) - set(hf_name_map(model.config).values()))
    if unexpected:
        raise ConversionError(f"--backbone_path {path} does not match the backbone: {len(unexpected)} unexpected "
                              f"(e.g. {', '.join(unexpected[:3])})")
    assign_params(model.backbone, convert_state(model.config, state, where=f"--backbone_path {path}"),
                  where=f"--backbone_path {path}")


class MxSession:
    """This process: refusals, communication (``bench.backends.mxnet.dist``), the device (context), seeds, AMP."""

    def __init__(self, config):
        refuse_other_launchers(config)
        # Reads the launcher's env; refuses the default --comm_backend device under a launcher.
        self.world = detect_world(config.comm_backend, config.gpus)
        self.ctx = choose_context(self.world.gpu, config.gpus)
        refuse_dtype(config, on_gpu=self.ctx.device_type == "gpu")
        self.comm = open_comm(self.world)
        self.rank, self.world_size, self.is_main = self.comm.rank, self.comm.world_size, self.comm.is_main
        self.launcher = self.world.launcher
        if config.compile and self.is_main:
            logger.warning("--compile is torch.compile; --backend mxnet always hybridizes its model instead")
        mx.random.seed(config.seed)     # the QA head's initialisation (rank 0's is broadcast before training)
        np.random.seed(config.seed)
        self.on_cpu = self.ctx.device_type == "cpu"
        # float32 on the CPU (refuse_dtype): training graphs use our kernels there, where they build; a run
        # that does not train neither builds nor loads them.
        self.trains_on_cpu = self.on_cpu and config.do_train
        self.kernels = training_kernels() if self.trains_on_cpu else None
        self.device_label = f"{self.ctx} (mxnet {mx.__version__}; {describe_kernels(self.kernels)})"
        self.amp = init_amp(config)

    def barrier(self) -> None:
        self.comm.barrier()

    def close(self) -> None:
        self.comm.shutdown()

    def load_model(self, config) -> LoadedModel:
        source, tokenizer, model = load_model(config, self.ctx, self.kernels)
        return LoadedModel(source=source, tokenizer=tokenizer, model=model, family=source.family,
                           num_parameters=int(sum(np.prod(p.shape) for p in model.collect_params().values())))

    def training_steps(self, config, loaded: LoadedModel, setup: TrainingSetup) -> MxSteps:
        model = loaded.model
        apply_rules(model, parameter_rules(model, layerwise_decay=config.layerwise_decay,
                                           untunable_depth=config.untunable_depth))
        gluon_trainer = build_trainer(model, config)
        if self.amp:
            from mxnet.contrib import amp as mx_amp
            mx_amp.init_trainer(gluon_trainer)
        return MxSteps(config=config, model=model, trainer=gluon_trainer, params=trainable_params(model),
                       setup=setup, pad_id=loaded.pad_id, ctx=self.ctx, amp=self.amp, comm=self.comm)

    def parameter_digest(self, loaded: LoadedModel) -> str:
        return parameter_digest(loaded.model)

    def predict(self, config, loaded: LoadedModel, features, checkpoint: Path | None) -> dict | None:
        """Each rank predicts a contiguous block of windows; rank 0 gets them all, in feature order."""
        if checkpoint is not None:
            load_model_weights(loaded.model, checkpoint / MODEL_FILE)
        local = eval_shard(len(features), self.rank, self.world_size)
        bar = progress_factory("eval", "window")(len(local)) if self.is_main else None
        outputs = predict_windows(loaded.model, features, local, EvalBatching.from_config(config, loaded.pad_id),
                                  ctx=self.ctx, progress=bar)
        if bar is not None:
            bar.close()
        return self.comm.gather_arrays_to_main(outputs)

    def facts(self) -> RunFacts:
        on_gpu = self.ctx.device_type == "gpu"
        # Host peak RSS: MXNet 1.x has no peak-allocation counter for GPU memory.
        memory = {"peak_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "kind": "rss"}
        kernels = kernels_version(self.kernels) if self.trains_on_cpu else "not used"
        return RunFacts(memory=memory, versions={**library_versions(LIBRARIES), "cpu_kernels": kernels},
                        hardware=hardware_info(f"gpu({self.ctx.device_id}) via MXNet" if on_gpu else None,
                                               1 if on_gpu else 0))
