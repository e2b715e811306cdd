"""Method 1, runtime half (METHODS.md §1): adversarial attacks, standard detectors (the Detector
contract), the concept filter that flags likely misclassified or adversarial inputs, the failure modes its alerts
name, and the white-box attack that knows the filter."""
from conceptlens.runtime.adaptive import AdaptiveAttacker, TorchFilter, adaptive_attack
from conceptlens.runtime.attacks import ATTACKS, Attacker, attack_images, success_rate
from conceptlens.runtime.detectors import (BASELINES, KNN, Detector, Energy, Mahalanobis, MaxSoftmax,
                                           RelativeMahalanobis, Stacked, detection_metrics, threshold_at_fpr)
from conceptlens.runtime.failure_modes import FailureModes
from conceptlens.runtime.filter import HEADS, SIGNALS, VERDICTS, ConceptFilter

__all__ = ["ATTACKS", "BASELINES", "HEADS", "KNN", "SIGNALS", "VERDICTS", "AdaptiveAttacker", "Attacker",
           "ConceptFilter", "Detector", "Energy", "FailureModes", "Mahalanobis", "MaxSoftmax", "RelativeMahalanobis",
           "Stacked", "TorchFilter", "adaptive_attack", "attack_images", "detection_metrics", "success_rate",
           "threshold_at_fpr"]
