"""EchoDistill: noise-robust post-training of audio LLMs with a clean-audio teacher inside GRPO.

The Python API (``echodistill/api.py``): ``make_config``, ``Trainer`` (``.train()``, ``.warmup()``,
``.evaluate()``), ``evaluate``, ``load_model`` (-> ``TrainedModel.predict``), ``predict``, ``report``. Heavy modules (torch,
transformers) load on first use, so ``import echodistill`` stays quick.
"""

__version__ = "0.1.0"

from .api import TrainedModel, Trainer, evaluate, load_model, make_config, predict, report  # noqa: E402
from .config import VARIANTS, ConfigError  # noqa: E402
from .errors import UserError  # noqa: E402

__all__ = ["__version__", "make_config", "Trainer", "evaluate", "load_model", "predict", "report",
           "TrainedModel", "VARIANTS", "ConfigError", "UserError"]
