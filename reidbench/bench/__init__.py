"""How each variant is measured: parameters, FLOPs, latency and memory."""
