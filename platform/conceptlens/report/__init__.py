"""Figures, the HTML report of a run and the comparison of two runs.

The report (:func:`conceptlens.report.build.build_report`) reads a run folder's outputs section by section
(``overview``, ``heatmaps``, ``causes``, ``neuron_cards``, ``runtime_filter``, ``attack_examples``, the
scorecard's rows from :mod:`conceptlens.evaluation.summary`) and renders one self-contained page with the
package's Jinja2 templates (:mod:`conceptlens.report.page`); ``svg`` draws the small inline figures."""
