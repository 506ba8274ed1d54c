"""What a run measures: metric pairs summed exactly over micro-batches and ranks (pairs, tracker),
the learning statistics of replaced-token detection (learning), validation (validation) and where
they are written (logger)."""
