"""SQuAD Bench: fine-tune and evaluate extractive QA models on SQuAD 1.1 / 2.0.

The package is split so that dependencies point one way:

* core (framework-free, never imports torch or mxnet): ``data``, ``prepare``,
  ``features``, ``postprocess``, ``evaluate``, ``results``, ``references``,
  ``report``, ``presets``, ``models``, ``config``, ``io_utils``;
* backends, loaded lazily by name through ``bench.run.registry``:
  ``bench.backends.torch`` (and later ``bench.backends.mxnet``);
* distributed launch helpers: ``bench.run.distributed``;
* command-line entry points on top: ``bench.run_squad`` and ``bench.apps.cli``.
  Nothing imports them.
"""

__version__ = "0.1.0"
