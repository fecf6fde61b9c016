"""Training for robustness versus ease of learning (Section 5.3).

* :mod:`~faultbound.apps.training.fit` -- model builders (:func:`mlp`, :func:`tuned_mlp` of the
  paper's K-Lipschitz sigmoids), :func:`clip_weights` and the seeded trainer :func:`fit`;
* :mod:`~faultbound.apps.training.regularisers` -- certified crash bounds as differentiable
  functions of the weights (:func:`fep_paper_torch`, :func:`fep_neuron_torch`,
  :func:`fep_regulariser`), constants read off the activation registry;
* :mod:`~faultbound.apps.training.experiment` -- :class:`TrainConfig`, :func:`train`, :func:`sweep`
  and the files around a run.

No function here changes torch's global random state.
"""

from faultbound.apps.training.experiment import (
    TrainConfig,
    TrainResult,
    export_model,
    split_dataset,
    sweep,
    train,
    write_csv,
)
from faultbound.apps.training.fit import clip_weights, fit, init_linear_, mlp, tuned_mlp
from faultbound.apps.training.regularisers import (
    DenseConstants,
    dense_constants,
    fep_neuron_torch,
    fep_paper_torch,
    fep_regulariser,
)

__all__ = [
    "fit",
    "mlp",
    "tuned_mlp",
    "init_linear_",
    "clip_weights",
    "fep_paper_torch",
    "fep_neuron_torch",
    "fep_regulariser",
    "DenseConstants",
    "dense_constants",
    "TrainConfig",
    "TrainResult",
    "train",
    "sweep",
    "export_model",
    "write_csv",
    "split_dataset",
]
