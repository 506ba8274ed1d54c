"""The training loop around the DeepSpeed engine (trainer), the clock of fp16's skipped steps
(loss_scale) and torch.compile of the transformer blocks (compile)."""
