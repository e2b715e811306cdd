"""Method 1, runtime half (METHODS.md §1): adversarial attacks, standard detectors (the Detector
contract) and the concept filter that flags likely misclassified or adversarial inputs."""
from conceptlens.runtime.attacks import ATTACKS, Attacker, attack_images, success_rate
from conceptlens.runtime.detectors import (BASELINES, KNN, Detector, Energy, Mahalanobis, MaxSoftmax,
                                           RelativeMahalanobis, Stacked, detection_metrics, threshold_at_fpr)
from conceptlens.runtime.filter import HEADS, SIGNALS, VERDICTS, ConceptFilter

__all__ = ["ATTACKS", "BASELINES", "HEADS", "KNN", "SIGNALS", "VERDICTS", "Attacker", "ConceptFilter", "Detector",
           "Energy", "Mahalanobis", "MaxSoftmax", "RelativeMahalanobis", "Stacked", "attack_images", "detection_metrics",
           "success_rate", "threshold_at_fpr"]
