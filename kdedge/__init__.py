"""kdedge: compact multi-label Chinese text classifiers by knowledge distillation, shipped to the edge."""
__version__ = "0.1.0"
