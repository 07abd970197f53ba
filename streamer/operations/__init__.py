"""What people and operators use: the command line, the demo, the benchmarks."""
