"""Per-frame analysis of the frames as they stream: spot counts, azimuthal integration (pyFAI)
and ROI sums, the same functions live and offline."""
