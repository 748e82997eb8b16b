"""Analyses: tools that measure why alignment fails, one room each (Behavior Expectation Bounds, ...)."""
