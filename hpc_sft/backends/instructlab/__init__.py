"""The instructlab-training backend: the backend class and its full_state/epoch_E checkpoints."""
