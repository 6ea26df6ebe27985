"""The one error type for inputs a stage reads: params, prompt files, synth tables, checkpoints, the judge endpoint.

Readers raise `InputError` with a one-line message naming the file or key, what is wrong and the fix; the stage
CLIs print that line alone and exit with code 2 (flows/cli.py).
"""

REBUILD = "rebuild it with `dvc repro` or restore it with `dvc checkout`"
"""The fix for a stage output that a later stage cannot read."""


class InputError(ValueError):
    """An input a stage reads is missing or unusable; the message is one line: what, what is wrong, the fix."""
