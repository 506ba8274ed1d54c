"""What a training step costs: analytic and counted FLOPs (flops, flop_counter), peak memory and the
ZeRO division of model states (memory), and the paper's settings to check them against (paper)."""
