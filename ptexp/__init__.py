"""ptexp: compare full fine-tuning with prefix tuning and its relatives, composed with Hydra, tracked in MLflow."""

__version__ = "0.1.0"
