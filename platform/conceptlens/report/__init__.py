"""Figures, and (coming) the HTML report and the comparison of two runs."""
