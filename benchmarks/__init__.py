"""minicv's benchmark harness: ``python -m benchmarks`` (the same as ``minicv bench``); see README.md."""
