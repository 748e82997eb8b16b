"""The lab: what runs many verbs (the demo, sweeps). Only `lab/` and `cli/` import `disalign.api`."""
