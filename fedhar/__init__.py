"""fedhar: federated contrastive fusion pretraining for multimodal human activity recognition.

The core library. It depends on torch, numpy, scipy and scikit-learn only: never on
Flower, Ray or Hydra, so the same code runs centralised and inside Flower clients.
"""

__version__ = "0.1.0"
