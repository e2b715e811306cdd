"""The scorecard: every diagnosis against ConceptWorld's truth. With ``world``, the only wing that
reads ground-truth columns (``scenario``, the attribute columns)."""
