"""The model metadata key that names the WaveRNN module a node computes (its provenance).

The exporter and the Loop builder set it, every pass carries it to the nodes it builds,
and the profiler attributes time by it.
"""

__all__ = ["MODULE_KEY"]

MODULE_KEY = "waveopt.module"
