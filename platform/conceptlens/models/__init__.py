"""Model adapters: classifiers as (encoder, head) pairs, open_clip VLMs, concept sets and banks, and the
embedder that turns images into the rows of the embeddings table."""
from conceptlens.models.classifier import Classifier, build_classifier, save_classifier, split_model
from conceptlens.models.concepts import ConceptSet, concept_groups, load_concepts, two_valued
from conceptlens.models.device import resolve_device
from conceptlens.models.embedding import (VECTOR_COLUMNS, Embedder, ModelSpec, TextEmbedder, decode_batch,
                                          decode_image, file_digest)
from conceptlens.models.vlm import VLM, ConceptBank, build_vlm, register_model_config, save_vlm

__all__ = ["VECTOR_COLUMNS", "Classifier", "ConceptBank", "ConceptSet", "Embedder", "ModelSpec", "TextEmbedder", "VLM",
           "build_classifier", "build_vlm", "concept_groups", "two_valued", "decode_batch", "decode_image", "file_digest",
           "load_concepts", "register_model_config", "resolve_device", "save_classifier", "save_vlm", "split_model"]
