"""Runtime helpers every layer needs: devices and autocast, regional compilation, dispatch counting and
profiler labels, torch.distributed worlds, progress output and atomic file writes. Imports nothing above it."""
