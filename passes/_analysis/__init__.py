"""Analyses shared by several passes (and, through ``waveopt.passes``' public names, by
the core): the loop scope, loop features, linear forms, the WaveRNN recurrence and its
sampler. Nothing here rewrites a graph."""
