"""selfsup.moco: the unofficial MoCo v1 (eveningglow/MoCo) with its M0-M3 ablations, plus MoCo v2 options."""
