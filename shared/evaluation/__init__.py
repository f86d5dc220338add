"""The shared evaluation harness: linear, semi-supervised and kNN protocols of the reproduced papers.

Python API (the CLI ``selfsup-eval`` is :mod:`.cli`):

* :func:`run_linear` / :func:`run_semisup` / :func:`run_knn` evaluate an ``nn.Module`` backbone;
* :func:`evaluate_checkpoint` loads any supported checkpoint file and runs a protocol on it;
* :func:`resolve_config` and the preset registries :data:`LINEAR_PRESETS`, :data:`SEMISUP_PRESETS`,
  :data:`KNN_PRESETS` give each protocol's exact values;
* :func:`knn_accuracy`, :class:`FeatureCache`, :func:`extract_features` and :func:`write_report` are the
  building blocks.

Modules: :mod:`.configs` (one frozen configuration per protocol), :mod:`.presets` (values), :mod:`.inputs`
(image pipelines; CMC's colour views come from :mod:`selfsup.shared.data.colorspace`), :mod:`.probes`
(which feature), :mod:`.features` (extraction and cache), :mod:`.knn`, :mod:`.linear`, :mod:`.semisup`,
:mod:`.subsets` (labelled subsets), :mod:`.probe_training` (the probes' schedules, metrics, resume), :mod:`.results`,
:mod:`.report`, :mod:`.comparison` (encoders side by side), :mod:`.demo` (the pretrained-against-random-init
demo every method runs, sized to the machine), :mod:`.api`, :mod:`.cli`. See ``docs/evaluation.md``.
"""

from selfsup.shared.evaluation.api import PROTOCOLS, evaluate_checkpoint, load_for_evaluation
from selfsup.shared.evaluation.features import FeatureCache, extract_features, module_sha256
from selfsup.shared.evaluation.knn import knn_accuracy, run_knn
from selfsup.shared.evaluation.linear import run_linear
from selfsup.shared.evaluation.presets import (
    KNN_PRESETS,
    LINEAR_PRESETS,
    PRESETS,
    SEMISUP_PRESETS,
    KnnConfig,
    LinearConfig,
    SemisupConfig,
    resolve_config,
)
from selfsup.shared.evaluation.report import write_report
from selfsup.shared.evaluation.results import load_results, write_result
from selfsup.shared.evaluation.semisup import run_semisup

__all__ = [
    "KNN_PRESETS",
    "LINEAR_PRESETS",
    "PRESETS",
    "PROTOCOLS",
    "SEMISUP_PRESETS",
    "FeatureCache",
    "KnnConfig",
    "LinearConfig",
    "SemisupConfig",
    "evaluate_checkpoint",
    "extract_features",
    "knn_accuracy",
    "load_for_evaluation",
    "load_results",
    "module_sha256",
    "resolve_config",
    "run_knn",
    "run_linear",
    "run_semisup",
    "write_report",
    "write_result",
]
