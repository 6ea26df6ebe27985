"""ShapeWorld: the synthetic compositional testbed (scenes, prompts, renderer, exact verifier, edits, VQA)."""
