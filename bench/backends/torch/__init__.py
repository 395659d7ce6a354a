"""PyTorch + transformers backend, registered as ``--backend torch`` (loaded lazily by
``bench.run.registry.get_backend``).

``BACKEND.main(config)`` runs one validated RunConfig through the shared stage driver
(``bench.run.driver``): one process, one worker process per GPU for ``--comm_backend device
--gpus 0,1,..``, or one rank under torchrun/horovodrun, with a fail-fast wrapper so that an
error on any rank ends the whole job non-zero.

Modules:
    session       the Session contract: device, communication, model, predict, facts
    steps         the optimizer step the shared loop drives; checkpoint state and resume
    modeling      QAModel: a family's encoder + a registered head; inference copies (int8, bf16)
    hf_backbone   encoders of the Hugging Face families through transformers
    heads         the QA heads (one class per head registry entry)
    losses        the training losses (one function per loss registry entry)
    cpu_training  CPU training fast paths (dropout masks, eager attention)
    optim         AdamW groups (layer-wise decay, freezing), the LR schedule
    dist          communication: one process, torch.distributed, Horovod; device workers
    inference     evaluation forward passes; checkpoint files: checkpoint
"""
from __future__ import annotations

__all__ = ["BACKEND", "TorchBackend", "run"]


def run(config, stop_after=None):
    """Run one seed in this process; returns the results record on rank 0 (else None).
    Module-level so that spawned device workers can pickle it."""
    from bench.run.driver import run as run_stages
    return run_stages(BACKEND, config, stop_after=stop_after)


class TorchBackend:
    name = "torch"

    def open_session(self, config):
        from bench.backends.torch.session import TorchSession
        return TorchSession(config)

    def main(self, config) -> int:
        from bench.backends.torch.dist import launch
        return launch(run, config)

    def has_accelerator(self) -> bool:
        import torch
        return torch.cuda.is_available()

    def default_dtype(self) -> str:
        """bfloat16 where the hardware computes it natively (GPU, or a CPU with AVX-512 BF16/AMX:
        ``bench.run.cpu.detect_cpu``), float16 on older GPUs, else float32 (emulated bfloat16 on an
        AVX2-only CPU trained 24x slower than float32)."""
        import torch
        if torch.cuda.is_available():
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        from bench.run.cpu import detect_cpu
        return "bfloat16" if detect_cpu().native_bf16 else "float32"


BACKEND = TorchBackend()
