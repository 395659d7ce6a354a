"""MXNet 1.9.1 + GluonNLP 0.10.0 backend, registered as ``--backend mxnet`` (loaded lazily by
``bench.backends.get_backend``).

It fine-tunes the same Hugging Face checkpoints as the torch backend: ``convert``
reads a model folder's ``config.json`` + ``model.safetensors`` (numpy only, no
torch) into Gluon encoders built from GluonNLP's transformer cells
(``encoders``, ``mobilebert``), and ``heads`` holds the two QA heads, parameter
for parameter the torch backend's (``bench.torch_backend.modeling``), so weights
and checkpoints move between the backends by name.

Modules:
    compat      import_mxnet(): numpy < 2 check, numpy.bool alias, OpenMP threads, install hint
    encoders    Gluon BERT / RoBERTa / ELECTRA / ALBERT / DistilBERT encoders (GluonNLP cells)
    mobilebert  Gluon MobileBERT (bottlenecks, NoNorm, stacked FFNs; no GluonNLP counterpart)
    convert     Hugging Face folder -> Gluon encoder with the converted weights
    heads       the conditional and basic QA heads, GluonQAModel (encoder + head), torch <-> Gluon
                parameter names

MXNet needs numpy < 2: install the extra with ``bash scripts/install_mxnet.sh``.
"""
