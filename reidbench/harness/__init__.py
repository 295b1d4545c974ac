"""How each variant is trained and evaluated: data, sampling, losses, metrics, the runner."""
