"""AI plugins: the SDK vendors write against, the SR/SEG writers, the job runner and benchmarks."""
