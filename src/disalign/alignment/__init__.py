"""The `align` room: safety fine-tuning of any causal LM (SFT, DPO, unlearning; full or LoRA) on
harmful prompts answered with refusals and benign prompts answered as the model already does."""

from disalign.alignment.config import ALIGN_METHODS, AlignConfig
from disalign.alignment.data import alignment_pairs, self_answers
from disalign.alignment.instructions import INSTRUCTIONS, instruction_records
from disalign.alignment.refusals import REFUSALS, read_refusals
from disalign.alignment.run import run_align

__all__ = [
    "ALIGN_METHODS",
    "INSTRUCTIONS",
    "REFUSALS",
    "AlignConfig",
    "run_align",
    "alignment_pairs",
    "instruction_records",
    "read_refusals",
    "self_answers",
]
