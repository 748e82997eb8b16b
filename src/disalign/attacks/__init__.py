"""Attacks that undo a model's safety alignment."""
