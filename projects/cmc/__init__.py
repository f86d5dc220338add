"""selfsup.cmc: Contrastive Multiview Coding (HobbitLong/CMC + Image Mixture) and its InsDis/MoCo trainers."""
