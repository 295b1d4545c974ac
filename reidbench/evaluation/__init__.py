"""Scoring retrieval from features the caller already has: rank metrics, re-ranking, modality-subset scores.

It runs no model. Running the model to get query and gallery features belongs to the
harness (`harness.evaluate`), which hands them here; keeping the scoring below the harness
lets reports, benchmarks and users score features or distance matrices of their own
without pulling in training, placement or the run directory. It needs only errors,
schema and the dataset records (the junk identity, the modality letters).
"""
