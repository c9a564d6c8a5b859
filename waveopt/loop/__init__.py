"""Whole-generation Loop models from one-step graphs.

``from_step`` (``builder.py``) wraps a user's exported one-step WaveRNN cell, with its
conditioning network and a sampler (``samplers.py``), into a model with waveopt's input and
output conventions; ``assembly.py`` is the Loop assembly it shares with the exporter
(``waveopt.models.export``).
"""

from waveopt.loop.builder import LAYOUTS, from_step
from waveopt.loop.samplers import SAMPLERS

__all__ = ["LAYOUTS", "SAMPLERS", "from_step"]
