"""fedhar: federated contrastive fusion pretraining for multimodal human activity recognition.

The core library. It depends on torch, numpy, scipy and scikit-learn only: never on
Flower, Ray or Hydra, so the same code runs centralised and inside Flower clients.
"""

# The third-party modules fedhar uses, imported while the ``fedhar`` package is being
# initialised. Flower's simulation imports the ServerApp and the ClientApp in two threads at
# once; both reach fedhar, and concurrent imports of a package with internal import cycles
# (scikit-learn's ``sklearn`` <-> ``sklearn.base``) can hand one thread a half-initialised
# module ("cannot import name 'clone' from partially initialized module 'sklearn.base'").
# Importing them here, under the ``fedhar`` package's import lock, lets the first thread
# finish them while the other waits. fedhar's own modules likewise (a thread got a
# half-initialised fedhar.models.attention): the whole library loads under that lock.
__version__ = "0.1.0"

import scipy.io  # noqa: F401
import sklearn.base
import sklearn.cluster
import sklearn.decomposition
import sklearn.ensemble
import sklearn.linear_model
import sklearn.metrics
import sklearn.model_selection
import sklearn.neighbors
import sklearn.pipeline
import sklearn.preprocessing  # noqa: F401
import torch
import torch.nn.functional  # noqa: F401
import tqdm.auto  # noqa: F401

import fedhar.config
import fedhar.federated
import fedhar.privacy
import fedhar.secure_sum  # noqa: F401
