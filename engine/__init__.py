"""The distillation engine: plain PyTorch, no web framework, no task queue."""
