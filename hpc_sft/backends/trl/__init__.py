"""The trl backend: the backend class, the pure config mapping, the torchrun launch, the worker and its checkpoint-N."""
