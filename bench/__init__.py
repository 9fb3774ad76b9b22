"""ft-bench: one harness to benchmark fine-tuning methods."""
