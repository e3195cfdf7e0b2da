"""Evaluation harnesses, report plots and generated documentation pages.

Every ``twinstream eval`` command runs an engine from here: the C-MAPSS streaming
replay (:mod:`.cmapss_eval`), the gap-filling quality gate (:mod:`.synthetic`, with the
RUL effects in :mod:`.synth_rul`), gap detection on injected faults (:mod:`.gap_eval`)
and the federated comparison (:mod:`.federated_eval`). The product (worker, sidecar,
sink, federation services, models) imports nothing from this package: evaluation sits on
top of the product and measures it, the way a research baseline sits outside a framework.
"""
