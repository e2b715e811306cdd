"""Method 4 (LBEE, METHODS.md §4): failure modes described in sentences. Coming next."""
