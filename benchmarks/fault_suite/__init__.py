"""The fault catalogue's parts (benchmarks/faults.py is its command line):

- harness: launching the tiny run as a user would, reading what it logged, judging its exit;
- catalogue: the faults themselves (kills, signals, damaged checkpoints, a second job, ...);
- report: the rows found so far, written as faults.{json,md}."""
