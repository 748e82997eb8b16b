"""disalign from Python, as in a notebook: build the quick world, then measure how easily each
step undoes its alignment — a plain evaluation, emulated disalignment, a fine-tuning attack.

    python examples/quickstart.py            # builds the quick zoo in a temporary directory (~1-2 min)
    DISALIGN_ZOO=runs/zoo python examples/quickstart.py   # or uses a zoo you already built

Every call below runs in memory (no `out`): the results come back as objects, nothing is written.
"""

import os
import tempfile
from pathlib import Path

import disalign

# %% The world: a base model pretrained on a synthetic world, and three safety-tuned versions.
zoo = Path(os.environ.get("DISALIGN_ZOO") or Path(tempfile.mkdtemp()) / "zoo")
disalign.world.build(out=zoo, quick=True)  # reuses a zoo already there

# %% How harmful is the aligned model on plain unsafe requests? (exact judge: harm is known)
aligned = disalign.eval(model=str(zoo / "sft"), prompts="world:unsafe", world=zoo, judge="world", limit=60)
row = aligned.results[0]
print(f"sft alone: harmful {row.harmful_rate:.0%} (95% CI {row.ci[0]:.2f}-{row.ci[1]:.2f}, n={row.n})")

# %% Emulated disalignment: contrast the aligned model with its base, by sampling alone.
contrast = disalign.ed(
    base=str(zoo / "base"),
    aligned=str(zoo / "sft"),
    prompts="world:unsafe",
    world=zoo,
    judge="world",
    alpha=[0, 0.5, 1],
    limit=60,
)
for row in contrast.results:
    print(f"ED α={row.alpha:g}: harmful {row.harmful_rate:.0%} (CI {row.ci[0]:.2f}-{row.ci[1]:.2f})")

# %% A fine-tuning attack: ten harmful examples, five epochs.
attack = disalign.finetune(model=str(zoo / "sft"), recipe="harmful", world=zoo, shots=[10], epochs=[5], limit=60)
before, after = attack.rows(cell="before")[0], attack.rows(cell="s10-e5")[0]
print(f"fine-tuning 10×5: harmful {before.harmful_rate:.0%} -> {after.harmful_rate:.0%}")
