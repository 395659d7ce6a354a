"""One run of the PyTorch backend, from a validated RunConfig to ``results.json``.

Stages, in order (each a small function below):
``setup_process`` -> ``load_datasets`` -> ``load_model`` -> ``build_train_features`` ->
``train`` -> ``evaluate`` -> ``write_outputs``.

Launch commands (see README "Distributed training")::

    python -m bench.run_squad --model_name google_electra_small --do_train --do_eval ...
    horovodrun -np 4 -H localhost:4 python -m bench.run_squad --comm_backend horovod ...
    torchrun --nproc_per_node 4 -m bench.run_squad --comm_backend torchrun ...
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from bench.core.data import SquadDataset
from bench.run.distributed import WorldInfo, detect_world, eval_shard
from bench.core.features import FeatureParams, Features, load_or_build_features
from bench.run.pipeline import (dataset_cache_key, evaluate_checkpoints, feature_params, load_datasets,
                            total_updates)
from bench.run.helpers import CPU_WARNING_WINDOWS, feature_cache_dir, print_summary, progress_factory, run_log
from bench.run.record import hardware_info, library_versions, write_run_outputs
from bench.backends.torch.dist import init_comm
from bench.backends.torch.inference import predict_windows
from bench.backends.torch.modeling import build_qa_model, inference_model, load_tokenizer, resolve_model_source
from bench.backends.torch.optim import build_optimizer, build_scheduler
from bench.run.training_rules import warmup_updates
from bench.backends.torch.train_loop import Trainer, TrainStats, load_for_eval

logger = logging.getLogger("bench.run")

LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "horovod")


# ---------------------------------------------------------------------------------------- setup
def setup_process(config) -> tuple:
    world: WorldInfo = detect_world(config.comm_backend, config.gpus)
    comm = init_comm(world)
    if comm.device.type == "cpu" and world.local_world_size > 1 and "OMP_NUM_THREADS" not in os.environ:
        # Processes sharing a machine's cores: oversubscribed OpenMP threads spin and stall each other.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.local_world_size))
    torch.manual_seed(config.seed + comm.rank)
    np.random.seed(config.seed)
    return comm, world, Path(config.output_dir)


def autocast_factory(dtype: str, device: torch.device):
    """A zero-argument factory of autocast contexts for --dtype (float32/int8: no autocast)."""
    torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch_dtype)


# ----------------------------------------------------------------------------------------- data
def build_features(config, dataset: SquadDataset, tokenizer, params: FeatureParams, *, is_training: bool,
                   comm) -> Features:
    cache_dir = feature_cache_dir(config)
    # Rank 0 builds (and caches) first; the others then load the cache instead of racing to write it.
    if not comm.is_main:
        comm.barrier()
    features = load_or_build_features(dataset.examples, tokenizer, params, is_training=is_training,
                                      data_sha256=dataset_cache_key(dataset), cache_dir=cache_dir,
                                      overwrite_cache=config.overwrite_cache and comm.is_main,
                                      progress=comm.is_main)
    if comm.is_main:
        comm.barrier()
    return features


# ---------------------------------------------------------------------------------------- model
def load_model(config, device: torch.device):
    source = resolve_model_source(config.model_name, config.model_path)
    tokenizer = load_tokenizer(source)
    model = build_qa_model(source, head=config.head, dropout=config.classifier_dropout,
                           backbone_path=config.backbone_path)
    if config.param_checkpoint:
        load_for_eval(model, Path(config.param_checkpoint))
    model = model.to(device)
    if config.compile:
        # In place: parameter names (and so checkpoints and layer-wise decay) stay unchanged.
        model.backbone.compile(dynamic=True)
    return source, tokenizer, model


def model_record(config, source, model) -> dict:
    return {"name": config.model_name, "source": source.source, "family": model.family,
            "num_parameters": int(sum(p.numel() for p in model.parameters()))}


# ---------------------------------------------------------------------------------------- train
def warn_if_slow_on_cpu(config, model, trainer: Trainer, device) -> None:
    """Without a GPU, a large run first times one update on its longest windows and warns with the
    projected duration. That trial update is undone (weights, optimizer, schedule, RNG)."""
    windows_to_train = trainer.total_updates * config.batch_size * config.num_accumulated
    if device.type != "cpu" or windows_to_train < CPU_WARNING_WINDOWS:
        return
    saved = ({k: v.clone() for k, v in model.state_dict().items()}, trainer.optimizer.state_dict(),
             trainer.scheduler.state_dict(), torch.get_rng_state())
    longest = np.argsort(-trainer.features.lengths, kind="stable")[:config.batch_size]
    started = time.perf_counter()
    trainer.run_update([longest] * config.num_accumulated)
    seconds = time.perf_counter() - started
    model.load_state_dict(saved[0])
    trainer.optimizer.load_state_dict(saved[1])
    trainer.scheduler.load_state_dict(saved[2])
    torch.set_rng_state(saved[3])
    trainer.stats = TrainStats()
    logger.warning("no GPU: this recipe runs %d updates on the CPU; one update on the longest windows took "
                   "%.1f s, so expect up to %.1f hours. Use a GPU, or --max_train_samples to try it out.",
                   trainer.total_updates, seconds, seconds * trainer.total_updates / 3600)


def train(config, comm, model, features: Features, pad_id: int, output_dir: Path, autocast,
          stop_after: int | None = None) -> dict:
    device = comm.device
    order = np.random.default_rng(config.pre_shuffle_seed).permutation(len(features))
    updates = total_updates(config, len(features), comm.world_size)
    # Optimizer groups are built on the plain model (names drive layer-wise decay), then wrapped;
    # the schedule is attached to the wrapped optimizer, the one that steps.
    optimizer = comm.wrap_optimizer(build_optimizer(model, config), model,
                                    backward_passes_per_step=config.num_accumulated)
    scheduler = build_scheduler(optimizer, updates, warmup_updates(config, updates))
    scaler = torch.amp.GradScaler(device.type) if config.dtype == "float16" else None
    train_model = comm.wrap_model(model)
    trainer = Trainer(config=config, model=model, train_model=train_model, optimizer=optimizer,
                      scheduler=scheduler, scaler=scaler, comm=comm, features=features, order=order,
                      total_updates=updates, pad_id=pad_id, device=device, autocast_factory=autocast,
                      ckpt_root=output_dir / "checkpoints",
                      log_path=output_dir / "train_log.jsonl" if comm.is_main else None)
    resumed = config.resume and trainer.resume_from_latest()
    comm.broadcast_initial_state(model, optimizer)
    global_batch = config.batch_size * config.num_accumulated * comm.world_size
    logger.info("training %d windows: %d updates, global batch %d = %d (batch) x %d (accumulation) x %d "
                "(processes), dtype %s", len(features), updates, global_batch, config.batch_size,
                config.num_accumulated, comm.world_size, config.dtype)
    if not resumed and comm.world_size == 1:
        warn_if_slow_on_cpu(config, model, trainer, device)
    progress = progress_factory("train", "update") if comm.is_main else None
    stats = trainer.train(progress, stop_after=stop_after)
    # Every rank logs this: equal digests prove the replicas stayed in sync.
    logger.info("rank %d final parameter digest %s", comm.rank, parameter_digest(model))
    samples = stats.windows * comm.world_size
    return {"train_seconds": round(stats.seconds, 3), "updates": stats.updates, "global_batch_size": global_batch,
            "train_samples_per_second": round(samples / max(stats.seconds, 1e-9), 3),
            "train_tokens_per_second": round(stats.tokens * comm.world_size / max(stats.seconds, 1e-9), 1),
            "skipped_updates": stats.skipped_updates, "final_loss": stats.last_loss,
            "num_train_features": len(features)}


def parameter_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter's bytes, in name order (identical only for identical weights)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode("utf-8"))
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------- evaluate
def predict(config, comm, model, features: Features, pad_id: int, autocast) -> dict | None:
    """Each rank predicts a contiguous block of windows; rank 0 gets them all, in feature order."""
    local = eval_shard(len(features), comm.rank, comm.world_size)
    progress = progress_factory("eval", "window") if comm.is_main else None
    bar = progress(len(local)) if progress else None
    outputs = predict_windows(model, features, local, batch_size=config.eval_batch_size, pad_id=pad_id,
                              device=comm.device, autocast=autocast(), round_to=config.round_to,
                              start_top_n=config.start_top_n, end_top_n=config.end_top_n,
                              log_interval=config.eval_log_interval, progress=bar)
    if bar is not None:
        bar.close()
    return comm.gather_arrays_to_main(outputs)


def evaluate(config, comm, model, dev: SquadDataset, features: Features, pad_id: int, output_dir: Path) -> dict:
    def predict_checkpoint(checkpoint: Path | None) -> dict | None:
        if checkpoint is not None:
            load_for_eval(model, checkpoint)
        # A copy for int8 and CPU bfloat16, freed when this returns (before the next checkpoint loads).
        eval_model, eval_dtype = inference_model(model, config.dtype)
        return predict(config, comm, eval_model, features, pad_id, autocast_factory(eval_dtype, comm.device))

    return evaluate_checkpoints(config, output_dir, dev, features, predict_checkpoint, is_main=comm.is_main)


# ---------------------------------------------------------------------------------------- write
def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_bytes": int(torch.cuda.max_memory_allocated(device)), "kind": "cuda"}
    return {"peak_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "kind": "rss"}


def write_outputs(config, comm, output_dir: Path, *, source, model, train_info, eval_info, train, dev,
                  num_eval_features) -> dict:
    device = comm.device
    accelerator = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return write_run_outputs(
        config, output_dir, model_info=model_record(config, source, model), world_size=comm.world_size,
        train_info=train_info, eval_info=eval_info, train=train, dev=dev, num_eval_features=num_eval_features,
        memory=peak_memory(device), versions=library_versions(LIBRARIES),
        hardware=hardware_info(accelerator, torch.cuda.device_count() if device.type == "cuda" else 0))


# ------------------------------------------------------------------------------------------ run
def run(config, stop_after: int | None = None) -> dict | None:
    """Run one configuration (one seed). Returns the results record on rank 0, else None."""
    comm, world, output_dir = setup_process(config)
    with run_log(output_dir, enabled=comm.is_main):
        comm.barrier()
        logger.info("rank %d/%d on %s (launcher: %s)", comm.rank, comm.world_size, comm.device, world.launcher)
        try:
            return _run_stages(config, comm, output_dir, stop_after)
        finally:
            comm.barrier()
            comm.shutdown()


def _run_stages(config, comm, output_dir: Path, stop_after: int | None) -> dict | None:
    """The stages, in order: data, model, features, train, evaluate, write (rank 0)."""
    train_ds, dev_ds = load_datasets(config)
    source, tokenizer, model = load_model(config, comm.device)
    params = feature_params(config, model.backbone.config.model_type)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    autocast = autocast_factory(config.dtype, comm.device)
    train_info = eval_info = None
    if train_ds is not None:
        features = build_features(config, train_ds, tokenizer, params, is_training=True, comm=comm)
        train_info = train(config, comm, model, features, pad_id, output_dir, autocast, stop_after=stop_after)
        if stop_after is not None and train_info["updates"] < total_updates(config, len(features),
                                                                            comm.world_size):
            return None    # interrupted on purpose (tests of --resume)
    num_eval_features = None
    if dev_ds is not None:
        eval_features = build_features(config, dev_ds, tokenizer, params, is_training=False, comm=comm)
        num_eval_features = len(eval_features)
        eval_info = evaluate(config, comm, model, dev_ds, eval_features, pad_id, output_dir)
    if not comm.is_main:
        return None
    record = write_outputs(config, comm, output_dir, source=source, model=model, train_info=train_info,
                           eval_info=eval_info, train=train_ds, dev=dev_ds, num_eval_features=num_eval_features)
    print_summary(record, output_dir)
    return record
