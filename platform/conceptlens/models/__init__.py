"""Model adapters: classifiers as (encoder, head) pairs, open_clip VLMs and concept banks."""
from conceptlens.models.classifier import Classifier, build_classifier, save_classifier, split_model
from conceptlens.models.vlm import VLM, ConceptBank, build_vlm, register_model_config, save_vlm

__all__ = ["Classifier", "ConceptBank", "VLM", "build_classifier", "build_vlm", "register_model_config",
           "save_classifier", "save_vlm", "split_model"]
