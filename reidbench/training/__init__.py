"""The harness's training step and its ingredients (PK sampler, augmentation, losses, optimizer, schedule,
CUDA-graph replay): `reidbench run` trains with it and `reidbench bench` times it, so it sits below both."""
