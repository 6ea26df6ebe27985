"""The machine a result was computed on. Runs are bit-identical on one CPU type only (the same commit gives other
floats on another CPU type, kernel pinning included), so every stage's metrics.json and MLflow run records it."""

import os
import platform

import torch


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (/proc/cpuinfo), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts(threads: int | None = None) -> dict[str, str | int | None]:
    """CPU model, the ISA torch's CPU kernels dispatch to, cores, torch threads (`threads`, default torch's
    current setting), torch version and the GPU (None without one)."""
    return {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads() if threads is None else threads,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
