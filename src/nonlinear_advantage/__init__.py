"""nonlinear-advantage: sparsified channel-wise PReLUs and the average path length."""

__version__ = "0.1.0"
