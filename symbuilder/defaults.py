"""The parity check's defaults, ONE of each: the build (the spec's export.verify fields),
`symbuilder export`, `symbuilder verify` and `symbuilder bench` all read them here.

A leaf (no imports) so the spec may use them without importing MXNet. Measured on every
gluon model-zoo vision net at random He-init weights (tests/benchmarks/
measure_zoo_tolerance.py): max|ort - mxnet| / max|mxnet| is at most 3.2e-6 (vgg19_bn), while
max|ort - mxnet| alone ranges 5e-7 .. 3.2e3; so the bound scales with the output, and
rtol = 1e-5 of the output's scale keeps 3x headroom over the worst net measured.
"""

DEFAULT_ATOL = 1e-5  # absolute floor, for outputs whose scale is ~0
DEFAULT_RTOL = 1e-5  # relative to the output's scale, max|mxnet| over that output
DEFAULT_RANDOM_SAMPLES = 64  # random samples added to the held-out ones
DEFAULT_SEED = 0  # the random samples' seed: verify draws exactly what the build drew

# The rule, as the manifest records it beside the figures it was applied to.
TOLERANCE_RULE = ("max|ort - mxnet| <= atol + rtol * scale, per output, where scale = "
                  "max|mxnet| over that output")
