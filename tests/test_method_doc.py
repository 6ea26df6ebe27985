"""docs/method.md stays true to the code: every function or class it names exists, and the code cites it, not a
design file the repository does not hold."""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
METHOD = ROOT / "docs" / "method.md"
NAMED = sorted(set(re.findall(r"\b(r3(?:\.\w+)+)", METHOD.read_text())))
"""Every dotted r3 name the method mentions, in backticks or in a formula block."""


def resolve(dotted: str) -> object:
    """The module, or the attribute of the longest importable module prefix, that a dotted name names."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            target = getattr(target, attribute)
        return target
    raise ModuleNotFoundError(dotted)


def test_the_method_names_the_functions_of_its_formulas():
    assert {"r3.rl.objective.ppo_clip_loss", "r3.rl.objective.kl_k3", "r3.models.sampling.sde_step_mean_std",
            "r3.rl.objective.group_advantages", "r3.rl.rollout.RolloutBuffer.sample_node"} <= set(NAMED)


@pytest.mark.parametrize("dotted", NAMED)
def test_every_name_in_the_method_exists(dotted):
    target = resolve(dotted)
    assert callable(target) or hasattr(target, "__file__"), f"{dotted} is neither callable nor a module"


def test_code_cites_the_method_in_the_repository():
    sources = [path for package in ("r3", "tasks", "flows") for path in (ROOT / package).rglob("*.py")]
    citing = [f"{path.relative_to(ROOT)}:{n}" for path in sources
              for n, line in enumerate(path.read_text().splitlines(), 1) if "DESIGN.md" in line]
    assert citing == [], "cite docs/method.md instead"
