"""Side-by-side benchmarks of eventray against what users would pick instead (issue #7).

Run ``python -m benchmarks.run --quick`` (or ``make bench``); see ``benchmarks/RESULTS.md`` for the latest figures.
"""
