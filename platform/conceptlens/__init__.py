"""ConceptLens: debug and guard image classifiers in human concepts with a vision-language model."""
__version__ = "0.1.0"
