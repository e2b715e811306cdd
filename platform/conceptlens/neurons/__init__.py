"""Method 2 (NeuroInspect, METHODS.md §2): the neurons behind mistakes, their visualisations and a
repair of the decision layer. Coming next."""
