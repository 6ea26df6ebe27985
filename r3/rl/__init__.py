"""Tree-RL (docs/method.md): one step reads train.py -> rollout.py -> objective.py; config.py holds its settings,
checkpoint.py the trainer state and resume checkpoints."""
