"""One run of the MXNet backend, from a validated RunConfig to ``results.json``.

Stages, in order (each a small function below; the torch backend's runner, stage for stage):
``setup_process`` -> ``load_datasets`` -> ``load_model`` -> ``build_features`` -> ``train`` ->
``evaluate`` -> ``write_outputs``.

Everything framework-free is the core's: the data, the epoch plans, the features and
their cache, the schedule and layer rules, scoring, checkpoint folders and the results
record. Launch commands::

    python -m bench.run_squad --backend mxnet --model_name google_electra_small --do_train --do_eval ...
    python -m bench.run_squad --backend mxnet --gpus -1 ...            # CPU (the pip wheel is CPU-only)

Single process only: ``refuse_several_processes`` and ``refuse_dtype`` say what is refused and why.
"""
from __future__ import annotations

import logging
import resource
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from bench.run.checkpoints import MODEL_FILE, require_safetensors, without_backbone_prefix
from bench.core.flags import ConfigError
from bench.core.data import SquadDataset
from bench.run.distributed import DistributedConfigError, detect_world, parse_gpus
from bench.core.features import FeatureParams, Features, load_or_build_features
from bench.backends.mxnet.checkpoint import load_model_weights
from bench.backends.mxnet.compat import import_mxnet
from bench.backends.mxnet.convert import (ConversionError, assign_params, base_model_state, convert_state,
                                         encoder_config_from_hf, hf_name_map, read_hf_config, read_safetensors)
from bench.backends.mxnet.heads import build_qa_model
from bench.backends.mxnet.inference import predict_windows
from bench.backends.mxnet.optim import apply_rules, build_trainer, parameter_rules, trainable_params
from bench.run.helpers import (run_log, CPU_WARNING_WINDOWS, feature_cache_dir, print_summary,
                                          progress_factory)
from bench.run.model_source import ModelFolder, load_tokenizer, resolve_model_folder
from bench.backends.mxnet.train_loop import Trainer, parameter_digest
from bench.run.pipeline import (dataset_cache_key, evaluate_checkpoints, feature_params, load_datasets,
                            total_updates)
from bench.run.record import hardware_info, library_versions, write_run_outputs
from bench.run.training_rules import warmup_updates

mx, _ = import_mxnet()

logger = logging.getLogger("bench.run")

__all__ = ["run", "refuse_several_processes", "refuse_dtype", "choose_context", "load_model"]

LIBRARIES = ("mxnet", "gluonnlp", "transformers", "tokenizers", "safetensors", "numpy")
SINGLE_PROCESS_REASON = (
    "--backend mxnet trains in one process: Horovod here is built for PyTorch only (HOROVOD_WITHOUT_MXNET=1, "
    "so horovod.mxnet does not exist), and torchrun/torch.distributed workers cannot exchange MXNet "
    "gradients. Run one process with --comm_backend device --gpus 0 (or --gpus -1 for the CPU), or use "
    "--backend torch for multi-GPU training")


# ---------------------------------------------------------------------------------------- setup
def refuse_several_processes(config) -> None:
    """--comm_backend horovod/torchrun or several --gpus: refused, saying why and what to run instead."""
    if config.comm_backend != "device":
        raise DistributedConfigError(f"--comm_backend {config.comm_backend}: {SINGLE_PROCESS_REASON}")
    if len(parse_gpus(config.gpus)) > 1:
        raise DistributedConfigError(f"--gpus {config.gpus} asks for several GPUs: {SINGLE_PROCESS_REASON}")


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


def choose_context(config):
    """mx.gpu(id) for --gpus id when MXNet sees a GPU; otherwise the CPU (with a warning if a GPU was asked)."""
    gpu_ids = parse_gpus(config.gpus)
    if not gpu_ids:
        return mx.cpu()
    if mx.context.num_gpus() == 0:
        logger.warning("--gpus %s but MXNet sees no GPU (the mxnet pip wheel is CPU-only): running on the CPU",
                       config.gpus)
        return mx.cpu()
    return mx.gpu(gpu_ids[0])


def setup_process(config) -> tuple:
    """Refuse what cannot run, pick the device and seed. Returns (ctx, output_dir)."""
    refuse_several_processes(config)
    detect_world(config.comm_backend, config.gpus)     # refuses the env of a launcher that started several
    ctx = choose_context(config)
    refuse_dtype(config, on_gpu=ctx.device_type == "gpu")
    if config.compile:
        logger.warning("--compile is torch.compile; --backend mxnet always hybridizes its model instead")
    mx.random.seed(config.seed)     # the QA head's initialisation
    np.random.seed(config.seed)
    return ctx, Path(config.output_dir)


def init_amp(config) -> bool:
    """--dtype float16 on a GPU: MXNet AMP, set up before the model is built (it patches operators).

    Untested here: the mxnet wheel this project installs is CPU-only.
    """
    if config.dtype != "float16":
        return False
    from mxnet.contrib import amp

    amp.init(target_dtype="float16")
    return True


# ----------------------------------------------------------------------------------------- data
def build_features(config, dataset: SquadDataset, tokenizer, params: FeatureParams, *, is_training: bool) -> Features:
    return load_or_build_features(dataset.examples, tokenizer, params, is_training=is_training,
                                  data_sha256=dataset_cache_key(dataset), cache_dir=feature_cache_dir(config),
                                  overwrite_cache=config.overwrite_cache, progress=True)


# ---------------------------------------------------------------------------------------- model
def load_model(config, ctx) -> tuple:
    """(source, tokenizer, GluonQAModel): pretrained backbone, fresh head; then --backbone_path and
    --param_checkpoint (torch-named safetensors) over it, as the torch backend does."""
    source = resolve_model_folder(config.model_name, config.model_path)
    tokenizer = load_tokenizer(source)
    hf = read_hf_config(source.folder)
    encoder_config = encoder_config_from_hf(hf, where=source.source)
    model = build_qa_model(encoder_config, head=config.head, dropout=config.classifier_dropout,
                           init_std=hf.get("initializer_range", 0.02), ctx=ctx)
    state = base_model_state(read_safetensors(source.folder), encoder_config.family)
    assign_params(model.backbone, convert_state(encoder_config, state, where=source.source), where=source.source)
    if config.backbone_path:
        load_backbone_file(model, Path(config.backbone_path))
    if config.param_checkpoint:
        load_model_weights(model, Path(config.param_checkpoint))
    # Cached graphs with dynamic shapes (every batch has its own length); static_alloc measured slower.
    model.hybridize()
    return source, tokenizer, model


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


def model_record(config, source: ModelFolder, model) -> dict:
    return {"name": config.model_name, "source": source.source, "family": model.family,
            "num_parameters": int(sum(np.prod(p.shape) for p in model.collect_params().values()))}


# ---------------------------------------------------------------------------------------- train
def warn_if_slow_on_cpu(config, trainer: Trainer, ctx) -> None:
    """Without a GPU, a large run first times one update on its longest windows and warns with the
    projected duration. That trial update is undone (weights, optimizer, RNG)."""
    windows_to_train = trainer.total_updates * config.batch_size * config.num_accumulated
    if ctx.device_type != "cpu" or windows_to_train < CPU_WARNING_WINDOWS:
        return
    longest = np.argsort(-trainer.features.lengths, kind="stable")[:config.batch_size]
    seconds = trainer.time_one_update([longest] * config.num_accumulated)
    logger.warning("no GPU: this recipe runs %d updates on the CPU; one update on the longest windows took "
                   "%.1f s, so expect up to %.1f hours. Use a GPU, or --max_train_samples to try it out.",
                   trainer.total_updates, seconds, seconds * trainer.total_updates / 3600)


def train(config, ctx, model, features: Features, pad_id: int, output_dir: Path, amp: bool,
          stop_after: int | None = None) -> dict:
    order = np.random.default_rng(config.pre_shuffle_seed).permutation(len(features))
    updates = total_updates(config, len(features), 1)
    apply_rules(model, parameter_rules(model, layerwise_decay=config.layerwise_decay,
                                       untunable_depth=config.untunable_depth))
    gluon_trainer = build_trainer(model, config)
    if amp:
        from mxnet.contrib import amp as mx_amp
        mx_amp.init_trainer(gluon_trainer)
    trainer = Trainer(config=config, model=model, trainer=gluon_trainer, params=trainable_params(model),
                      features=features,
                      order=order, total_updates=updates, warmup=warmup_updates(config, updates), pad_id=pad_id,
                      ctx=ctx, amp=amp, ckpt_root=output_dir / "checkpoints", log_path=output_dir / "train_log.jsonl")
    resumed = config.resume and trainer.resume_from_latest()
    logger.info("training %d windows: %d updates, global batch %d = %d (batch) x %d (accumulation) x 1 "
                "(process), dtype %s", len(features), updates, config.batch_size * config.num_accumulated,
                config.batch_size, config.num_accumulated, config.dtype)
    if not resumed:
        warn_if_slow_on_cpu(config, trainer, ctx)
    stats = trainer.train(progress_factory("train", "update"), stop_after=stop_after)
    logger.info("final parameter digest %s", parameter_digest(model))
    return {"train_seconds": round(stats.seconds, 3), "updates": stats.updates,
            "global_batch_size": config.batch_size * config.num_accumulated,
            "train_samples_per_second": round(stats.windows / max(stats.seconds, 1e-9), 3),
            "train_tokens_per_second": round(stats.tokens / max(stats.seconds, 1e-9), 1),
            "skipped_updates": stats.skipped_updates, "final_loss": stats.last_loss,
            "num_train_features": len(features)}


# ------------------------------------------------------------------------------------- evaluate
def predict(config, ctx, model, features: Features, pad_id: int) -> dict:
    bar = progress_factory("eval", "window")(len(features))
    outputs = predict_windows(model, features, np.arange(len(features)), batch_size=config.eval_batch_size,
                              pad_id=pad_id, ctx=ctx, round_to=config.round_to, start_top_n=config.start_top_n,
                              end_top_n=config.end_top_n, log_interval=config.eval_log_interval, progress=bar)
    bar.close()
    return outputs


def evaluate(config, ctx, model, dev: SquadDataset, features: Features, pad_id: int, output_dir: Path) -> dict:
    def predict_checkpoint(checkpoint: Path | None) -> dict:
        if checkpoint is not None:
            load_model_weights(model, checkpoint / MODEL_FILE)
        return predict(config, ctx, model, features, pad_id)

    return evaluate_checkpoints(config, output_dir, dev, features, predict_checkpoint)


# ---------------------------------------------------------------------------------------- write
def peak_memory() -> dict:
    # Host peak RSS: MXNet 1.x has no peak-allocation counter for GPU memory.
    return {"peak_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "kind": "rss"}


def write_outputs(config, ctx, output_dir: Path, *, source, model, train_info, eval_info, train, dev,
                  num_eval_features) -> dict:
    on_gpu = ctx.device_type == "gpu"
    return write_run_outputs(
        config, output_dir, model_info=model_record(config, source, model), world_size=1,
        train_info=train_info, eval_info=eval_info, train=train, dev=dev, num_eval_features=num_eval_features,
        memory=peak_memory(), versions=library_versions(LIBRARIES),
        hardware=hardware_info(f"gpu({ctx.device_id}) via MXNet" if on_gpu else None, 1 if on_gpu else 0))


# ------------------------------------------------------------------------------------------ run
def run(config, stop_after: int | None = None) -> dict | None:
    """Run one configuration (one seed). Returns the results record, or None when ``stop_after``
    interrupted training on purpose (tests of --resume)."""
    ctx, output_dir = setup_process(config)
    with run_log(output_dir):
        logger.info("one process on %s (mxnet %s)", ctx, mx.__version__)
        amp = init_amp(config)
        train_ds, dev_ds = load_datasets(config)
        source, tokenizer, model = load_model(config, ctx)
        params = feature_params(config, source.family)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        train_info = eval_info = None
        if train_ds is not None:
            features = build_features(config, train_ds, tokenizer, params, is_training=True)
            train_info = train(config, ctx, model, features, pad_id, output_dir, amp, stop_after=stop_after)
            if stop_after is not None and train_info["updates"] < total_updates(config, len(features), 1):
                return None
        num_eval_features = None
        if dev_ds is not None:
            eval_features = build_features(config, dev_ds, tokenizer, params, is_training=False)
            num_eval_features = len(eval_features)
            eval_info = evaluate(config, ctx, model, dev_ds, eval_features, pad_id, output_dir)
        record = write_outputs(config, ctx, output_dir, source=source, model=model, train_info=train_info,
                               eval_info=eval_info, train=train_ds, dev=dev_ds, num_eval_features=num_eval_features)
        print_summary(record, output_dir)
        return record
