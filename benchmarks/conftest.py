# The benchmarks are standalone scripts (python benchmarks/run.py), not tests:
# keep pytest from importing them (they start long timed subprocesses).
collect_ignore_glob = ["*.py"]
