"""predictor: stops bad Kubernetes releases before they breach their SLOs."""

__version__ = "0.1.0"
