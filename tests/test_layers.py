"""The import layers check: the project passes it, and it catches upward and sideways imports and cycles."""

from pathlib import Path

import pytest

from r3.devtools import layers


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


PACKAGES = {"r3/__init__.py": "", "r3/world/__init__.py": "", "r3/rl/__init__.py": "", "r3/train/__init__.py": "",
            "r3/rl/b.py": "X = 1\n", "r3/train/sft.py": "Y = 1\n"}


def test_the_project_has_no_cycle_and_no_upward_import(capsys):
    assert layers.main([]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.index("flows") < out.index("tasks") < out.index("r3.rl") < out.index("r3.world")  # top down


@pytest.mark.parametrize("source", ["from r3.rl.b import X\n", "from ..rl import b\n", "import r3.rl.b\n",
                                    "def f():\n    from r3.rl import b\n"])
def test_an_upward_import_fails(tmp_path, capsys, source):
    root = write_tree(tmp_path, {**PACKAGES, "r3/world/a.py": source})
    assert layers.main(["--root", str(root)]) == 1
    assert "upward import: r3.world.a (r3.world, layer 2) -> r3.rl.b (r3.rl, layer 8)" in capsys.readouterr().err


def test_a_stage_importing_its_peer_fails(tmp_path, capsys):
    root = write_tree(tmp_path, {**PACKAGES, "r3/rl/c.py": "from r3.train.sft import Y\n"})
    assert layers.main(["--root", str(root)]) == 1
    assert "sideways import: r3.rl.c" in capsys.readouterr().err


CYCLE_B = {"module level": "from r3.world.a import A\nB = 1\n",
           "in a function": "def b():\n    from r3.world.a import A\n    return A\n"}


@pytest.mark.parametrize("where", CYCLE_B)
def test_an_import_cycle_fails_wherever_the_import_stands(tmp_path, capsys, where):
    """A deferred import (inside a function) dodges the cycle at import time but is one all the same."""
    a = {"r3/world/a.py": "from r3.world.b import B\nA = 1\n"}
    root = write_tree(tmp_path / "cycle", {**PACKAGES, **a, "r3/world/b.py": CYCLE_B[where]})
    assert layers.main(["--root", str(root)]) == 1
    assert capsys.readouterr().err.splitlines() == ["cycle: r3.world.a <-> r3.world.b"]
    root = write_tree(tmp_path / "no_cycle", {**PACKAGES, **a, "r3/world/b.py": "B = 1\n"})
    assert layers.main(["--root", str(root)]) == 0


def test_a_module_is_in_the_unit_of_its_longest_prefix():
    assert layers.unit_of("r3.train.sft") == (8, "r3.train.sft")
    assert layers.unit_of("r3.train.heldout_view") == (7, "r3.train")
    assert layers.unit_of("flows.graph") == (11, "flows")
    assert layers.unit_of("bench.rl_step") is None
