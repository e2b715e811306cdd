"""Method 3 (HUDD/SAFE, METHODS.md §3): clustering of failures into root causes. Coming next."""
