"""Reports over run directories and sweeps over grids of runs."""
