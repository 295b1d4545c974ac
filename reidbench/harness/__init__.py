"""Running a grid of variants: the run plan, data placement, each cell's lifecycle.

A cell is trained (the epoch loop, its hooks and checkpoints), evaluated, saved, measured
and recorded; around the cells sit the launchers, the run directory's lock, the console
lines, the TensorBoard files and `reidbench status`. Evaluation here means running the
model to get query and gallery features (`harness.evaluate`); scoring them lives one
layer down, in `reidbench.evaluation`.
"""
