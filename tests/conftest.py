"""Shared test setup. MXNet reads these variables at import, so they are set before any test imports it."""
import os

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_sessionstart(session):
    """specs/digits_images.yaml reads rendered digit images that are not committed (every
    spec in specs/ is built by the tests): render them once, when they are missing."""
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import image_data
    image_data.example_rendered()
