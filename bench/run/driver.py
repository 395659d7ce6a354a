"""The stage driver every backend runs: one run of one seed, from a validated RunConfig to
``results.json``, in small named stages:

``open_session`` -> ``load_datasets`` -> ``load_model`` -> ``build_features`` -> ``train`` ->
``evaluate`` -> ``write_outputs``.

The backend (``bench.run.backend``) supplies the session: the model, the optimizer step, the
predict function and the checkpoint state. Launch commands (see docs/distributed.md)::

    python -m bench.run_squad --model_name google_electra_small --do_train --do_eval ...
    python -m bench.run_squad --backend mxnet --gpus -1 ...
    horovodrun -np 4 -H localhost:4 python -m bench.run_squad --comm_backend horovod ...
    torchrun --nproc_per_node 4 -m bench.run_squad --comm_backend torchrun ...
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bench.core.data import SquadDataset
from bench.core.features import FeatureParams, Features, load_or_build_features
from bench.core.flags import config_to_dict
from bench.run.backend import LoadedModel, Session, TrainingSetup, TrainingSteps
from bench.run.helpers import CPU_WARNING_WINDOWS, feature_cache_dir, print_summary, progress_factory, run_log
from bench.run.checkpoints import verify_checkpoint
from bench.run.loop import LoopContext, TrainingLoop
from bench.run.output_dir import claim_output_dir
from bench.run.pipeline import (answer_windows, dataset_cache_key, evaluate_checkpoints, feature_params,
                                load_datasets, score_outputs, total_updates)
from bench.run.record import RunOutcome, write_run_outputs
from bench.run.trackers import NullSink, eval_scalars, open_sink
from bench.run.training_rules import warmup_updates
from bench.run.word_model import prepare_word_model

logger = logging.getLogger("bench.run")

__all__ = ["run", "build_features", "train", "evaluate", "write_outputs", "warn_if_slow_on_cpu"]


def run(backend, config, stop_after: int | None = None) -> dict | None:
    """Run one configuration (one seed) on ``backend``. Returns the results record on the main
    process; None elsewhere, or when ``stop_after`` interrupted training on purpose (tests of --resume)."""
    session = backend.open_session(config)
    output_dir = Path(config.output_dir)
    try:
        # Before anything is written: writable folders, the lock, no other run's outputs (main process only).
        claim = claim_output_dir(config, is_main=session.is_main)
    except BaseException:
        session.close()
        raise
    with claim, run_log(output_dir, enabled=session.is_main):
        claim.log_notes()
        session.barrier()
        logger.info("rank %d/%d on %s (launcher: %s)", session.rank, session.world_size, session.device_label,
                    session.launcher)
        try:
            return _stages(session, config, output_dir, stop_after)
        finally:
            session.barrier()
            session.close()


def _stages(session: Session, config, output_dir: Path, stop_after: int | None) -> dict | None:
    # --report_to: the sink (bench.run.trackers) reports on the main process; closed whatever happens.
    tracker = open_sink(getattr(config, "report_to", "none"), output_dir, config_to_dict(config),
                        is_main=session.is_main)
    try:
        return _run_stages(session, config, output_dir, stop_after, tracker)
    finally:
        tracker.close()


def _run_stages(session: Session, config, output_dir: Path, stop_after: int | None, tracker) -> dict | None:
    train_ds, dev_ds = load_datasets(config)
    # --model_name lstm_baseline / bidaf: build (or find) the word model's folder first (--model_path).
    config = prepare_word_model(config, train_ds, dev_ds, is_main=session.is_main, barrier=session.barrier)
    loaded = session.load_model(config)
    params = feature_params(config, loaded.family)
    train_info = eval_info = num_eval_features = eval_features = None
    interval = getattr(config, "eval_interval", None)
    evaluations: list[dict] | None = [] if interval else None
    if interval and (train_ds is None or dev_ds is None):
        logger.warning("--eval_interval %d needs --do_train and --do_eval: no evaluation during training", interval)
    if train_ds is not None:
        features = build_features(session, config, train_ds, loaded, params, is_training=True)
        if getattr(config, "answer_windows_only", False):
            features = answer_windows(features, train_ds)
        teacher = None
        if getattr(config, "teacher_path", None):     # --teacher_path: its logits, computed once (bench.run.distill)
            from bench.run.distill import teacher_logits
            teacher = teacher_logits(session, config, train_ds, loaded, params, features)
        evaluate_now = None
        if dev_ds is not None and interval:
            eval_features = build_features(session, config, dev_ds, loaded, params, is_training=False)
            evaluate_now = interval_evaluator(session, config, loaded, dev_ds, eval_features, tracker, evaluations)
        train_info = train(session, config, loaded, features, output_dir, stop_after=stop_after, tracker=tracker,
                           evaluate_now=evaluate_now, teacher=teacher)
        if stop_after is not None and train_info["updates"] < total_updates(config, len(features),
                                                                            session.world_size):
            return None    # interrupted on purpose (tests of --resume)
    if dev_ds is not None:
        if eval_features is None:
            eval_features = build_features(session, config, dev_ds, loaded, params, is_training=False)
        num_eval_features = len(eval_features)
        eval_info = evaluate(session, config, loaded, dev_ds, eval_features, output_dir)
        if session.is_main and eval_info:
            update = train_info["updates"] if train_info else 0
            tracker.log_eval(update, eval_info["metrics"])
            # The evaluation stage's model is the final one unless --all_evaluate picked an earlier checkpoint.
            if evaluations is not None and not config.all_evaluate:
                evaluations.append({"update": update, **eval_scalars(eval_info["metrics"]),
                                    "checkpoint": eval_info["checkpoint"]})
    if not session.is_main:
        return None
    record = write_outputs(session, config, output_dir, loaded=loaded, train_info=train_info, eval_info=eval_info,
                           train=train_ds, dev=dev_ds, num_eval_features=num_eval_features, evaluations=evaluations)
    tracker.log_final(record)
    print_summary(record, output_dir)
    return record


# ----------------------------------------------------------------------------------------- data
def build_features(session: Session, config, dataset: SquadDataset, loaded: LoadedModel, params: FeatureParams,
                   *, is_training: bool) -> Features:
    # The main process builds (and caches) first; the others then load the cache instead of racing to write it.
    if not session.is_main:
        session.barrier()
    features = load_or_build_features(dataset.examples, loaded.tokenizer, params, is_training=is_training,
                                      data_sha256=dataset_cache_key(dataset), cache_dir=feature_cache_dir(config),
                                      overwrite_cache=config.overwrite_cache and session.is_main,
                                      progress=session.is_main)
    if session.is_main:
        session.barrier()
    return features


# ---------------------------------------------------------------------------------------- train
def warn_if_slow_on_cpu(config, session: Session, steps: TrainingSteps, features: Features, updates: int) -> None:
    """Without a GPU, a large run first times one update on its longest windows and warns with the
    projected duration. The trial update is undone (weights, optimizer, schedule, RNG)."""
    if not session.on_cpu or updates * config.batch_size * config.num_accumulated < CPU_WARNING_WINDOWS:
        return
    longest = np.argsort(-features.lengths, kind="stable")[:config.batch_size]
    seconds = steps.trial_update([longest] * config.num_accumulated)
    logger.warning("no GPU: this recipe runs %d updates on the CPU; one update on the longest windows took "
                   "%.1f s, so expect up to %.1f hours. Use a GPU, or --max_train_samples to try it out.",
                   updates, seconds, seconds * updates / 3600)


def train(session: Session, config, loaded: LoadedModel, features: Features, output_dir: Path,
          stop_after: int | None = None, tracker=None, evaluate_now=None, teacher=None) -> dict:
    order = np.random.default_rng(config.pre_shuffle_seed).permutation(len(features))
    updates = total_updates(config, len(features), session.world_size)
    steps = session.training_steps(config, loaded, TrainingSetup(features, updates, warmup_updates(config, updates),
                                                                 output_dir))
    if teacher is not None:
        from bench.run.distill import formula_text
        logger.info(formula_text(teacher.temperature, teacher.alpha))
        steps.use_teacher(teacher)
    context = LoopContext(rank=session.rank, world_size=session.world_size, is_main=session.is_main,
                          ckpt_root=output_dir / "checkpoints",
                          log_path=output_dir / "train_log.jsonl" if session.is_main else None,
                          barrier=session.barrier, tracker=tracker if tracker is not None else NullSink(),
                          evaluate=evaluate_now)
    loop = TrainingLoop(config, steps, features, order, updates, context)
    resumed = config.resume and loop.resume_from_latest()
    steps.begin()
    global_batch = config.batch_size * config.num_accumulated * session.world_size
    logger.info("training %d windows: %d updates, global batch %d = %d (batch) x %d (accumulation) x %d "
                "(processes), dtype %s", len(features), updates, global_batch, config.batch_size,
                config.num_accumulated, session.world_size, config.dtype)
    if not resumed and session.world_size == 1:
        warn_if_slow_on_cpu(config, session, steps, features, updates)
    stats = loop.train(progress_factory("train", "update") if session.is_main else None, stop_after=stop_after)
    # Every rank logs this: equal digests prove the replicas stayed in sync.
    logger.info("rank %d final parameter digest %s", session.rank, session.parameter_digest(loaded))
    # The whole run (every segment, across --resume) from the position; throughput of this segment.
    run_so_far = loop.position
    samples = stats.windows * session.world_size
    seconds = max(stats.seconds, 1e-9)
    return {"train_seconds": round(run_so_far.train_seconds, 3), "updates": run_so_far.update,
            "global_batch_size": global_batch, "train_samples_per_second": round(samples / seconds, 3),
            "train_tokens_per_second": round(stats.tokens * session.world_size / seconds, 1),
            "skipped_updates": run_so_far.skipped_updates, "resumed_from": list(run_so_far.resumed_from),
            "final_loss": stats.last_loss, "num_train_features": len(features)}


# ------------------------------------------------------------------------------------- evaluate
def evaluate(session: Session, config, loaded: LoadedModel, dev: SquadDataset, features: Features,
             output_dir: Path) -> dict:
    def predict(checkpoint: Path | None):
        if checkpoint is not None:
            verify_checkpoint(checkpoint)       # a damaged file: one line naming it, not a silent score
        return session.predict(config, loaded, features, checkpoint)

    return evaluate_checkpoints(config, output_dir, dev, features, predict, is_main=session.is_main)


def interval_evaluator(session: Session, config, loaded: LoadedModel, dev: SquadDataset, features: Features,
                       tracker, evaluations: list[dict]):
    """--eval_interval: a callable(update) the loop calls on every process; it scores the model as it
    is (no checkpoint) on the main process, logs it, and appends ``{update, exact, f1, ...}`` to
    ``evaluations`` (results.json metrics.evaluations). The loop puts the model back in training mode."""
    def evaluate_now(update: int) -> None:
        outputs = session.predict(config, loaded, features, None)
        if not session.is_main:
            return
        metrics, _ = score_outputs(config, dev, features, outputs)
        entry = {"update": int(update), **eval_scalars(metrics)}
        logger.info("eval at update %d: exact %.2f f1 %.2f", update, entry.get("exact", float("nan")),
                    entry.get("f1", float("nan")))
        evaluations.append(entry)
        tracker.log_eval(update, metrics)

    return evaluate_now


# ---------------------------------------------------------------------------------------- write
def write_outputs(session: Session, config, output_dir: Path, *, loaded: LoadedModel, train_info, eval_info, train,
                  dev, num_eval_features, evaluations: list[dict] | None = None) -> dict:
    # What was loaded, never the --model_name flag's value by default: a registry name only when the
    # checkpoint is the registry's (ModelFolder.spec; schema and rule in bench.core.results).
    spec = loaded.source.spec
    model_info = {"name": spec.name if spec is not None else None, "registry_match": spec is not None,
                  "source": loaded.source.source, "family": loaded.family,
                  "num_parameters": int(loaded.num_parameters)}
    outcome = RunOutcome(model_info=model_info, world_size=session.world_size, train_info=train_info,
                         eval_info=eval_info, train=train, dev=dev, num_eval_features=num_eval_features,
                         evaluations=evaluations)
    return write_run_outputs(config, output_dir, outcome, session.facts())
