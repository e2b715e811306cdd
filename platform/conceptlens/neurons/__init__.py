"""Method 2 (NeuroInspect, METHODS.md §2): the neurons behind mistakes (counterfactual shifts of the pooled
features, voted), the concepts they follow, class-conditional visualisations (CLIP-Illusion) and a repair
of the decision layer. Other wings use the names exported here."""
from conceptlens.neurons.concepts import NeuronConcepts, centred_by_class, correlate, group_softmax
from conceptlens.neurons.counterfactual import (EXCESSIVE, INSUFFICIENT, Counterfactuals, SolverSettings, Votes, solve,
                                                solve_one_by_one, vote)
from conceptlens.neurons.illusion import Visualiser, visualise
from conceptlens.neurons.repair import LOSSES, Repair, RepairSettings, retaining_ratio, train_head

__all__ = ["EXCESSIVE", "INSUFFICIENT", "LOSSES", "Counterfactuals", "NeuronConcepts", "Repair", "RepairSettings",
           "SolverSettings", "Visualiser", "Votes", "centred_by_class", "correlate", "group_softmax",
           "retaining_ratio", "solve", "solve_one_by_one", "train_head", "visualise", "vote"]
