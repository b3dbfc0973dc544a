"""Shared test setup. MXNet reads these variables at import, so they are set before any test imports it."""
import os

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")
os.environ.setdefault("OMP_NUM_THREADS", "2")
