"""The machine record every stage writes beside its numbers (runs are bit-identical on one CPU type only)."""

import os
import platform

import pytest
import torch

from r3.machine import cpu_model, machine_facts


def test_facts_name_this_cpu_its_kernels_threads_and_torch():
    facts = machine_facts(threads=3)
    assert set(facts) == {"cpu", "cpu_capability", "cores", "threads", "torch", "gpu"}
    assert facts["cpu"] == cpu_model() and facts["cpu"].strip() != ""
    assert facts["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert facts["cores"] == os.cpu_count() and facts["threads"] == 3
    assert facts["torch"] == torch.__version__
    assert facts["gpu"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)


def test_threads_default_to_torchs_current_setting():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert machine_facts()["threads"] == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="no /proc/cpuinfo on this OS")
def test_cpu_model_is_the_kernels_model_name():
    names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
    assert cpu_model() == (names[0] if names else platform.processor() or platform.machine())
