"""disalign: measure how easily a language model's safety alignment is undone, and explain why."""

__version__ = "0.1.0"
