"""Measured process of the ``frameworks`` figure: one backend (torch or MXNet) training and evaluating
the same model on the same real windows, through the backend contract (``bench.run.backend``) that a
run uses: ``Session.load_model``, ``TrainingSteps.run_update`` over the run's epoch plan, ``Session.predict``.
The parent runs it once per backend and divides (``figures.compare_frameworks``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.apps.speed.measure import clock, since
from bench.apps.speed.qa_model import feature_params
from bench.apps.speed.train_step import plan_updates, time_updates


def task_frameworks(request: dict) -> dict:
    """Training samples/s (float32, dynamic padding + length grouping) and evaluation windows/s of one backend."""
    from bench.core.data import load_squad
    from bench.core.features import build_features
    from bench.core.flags import config_from_dict
    from bench.run.backend import TrainingSetup
    from bench.run.registry import get_backend

    config = config_from_dict({"backend": request["backend"], "do_train": True, "model_path": request["model_dir"],
                               "head": "basic", "batch_size": request["batch_size"], "dtype": "float32",
                               "eval_batch_size": request["eval_batch_size"], "lr": 3e-5, "gpus": "-1",
                               "max_seq_length": request["max_seq_length"], "doc_stride": request["doc_stride"],
                               "stride_mode": "overlap", "seed": 0})
    session = get_backend(request["backend"]).open_session(config)
    loaded = session.load_model(config)
    features = build_features(load_squad(request["data"], for_training=True).examples, loaded.tokenizer,
                              feature_params(loaded.family, "overlap", request), is_training=True)
    updates = plan_updates(config, features, request["warmup_steps"] + request["steps"])
    steps = session.training_steps(config, loaded, TrainingSetup(features=features, total_updates=len(updates),
                                                                 warmup_updates=0, output_dir=Path(".")))
    steps.begin()
    training = {**time_updates(steps, updates, request["warmup_steps"]),
                "updates": len(updates) - request["warmup_steps"]}
    evaluation = _time_predict(session, config, loaded, features.select(np.arange(min(len(features), request["eval_windows"]))))
    session.close()
    return {"backend": request["backend"], "device": session.device_label, "training": training,
            "evaluation": evaluation, "batch_size": config.batch_size, "eval_batch_size": config.eval_batch_size,
            "max_seq_length": config.max_seq_length}


def _time_predict(session, config, loaded, windows) -> dict:
    session.predict(config, loaded, windows.select(np.arange(min(len(windows), config.eval_batch_size))), None)  # warm-up
    start = clock()
    session.predict(config, loaded, windows, None)
    timing = since(start)
    return {**timing, "windows": len(windows), "windows_per_s": round(len(windows) / timing["wall_s"], 3)}
