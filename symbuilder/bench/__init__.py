"""`symbuilder bench`: what symbuilder costs on a user's own spec, as figures.

Training: symbuilder's train() against the code a user writes without it, on the identical
symbol, data, input statistics, initializer and optimizer: a hand-written Module.fit loop
(NDArrayIter, MXNet's own metrics), bare and with the extras a build also does every epoch
(validation; validation and a checkpoint), a hybridized Gluon twin of the same architecture
(gluon.Trainer), and PyTorch on the CPU with the same architecture where torch is installed.
Inference: ONNX Runtime on the export against MXNet Module forward, at batch 1 (latency)
and batch 256 (throughput). One process, contenders interleaved after a warm-up, medians
over repeats; every clock stops after mx.nd.waitall() (reading a metric or an output waits
for MXNet's engine, so a clock stopped earlier measures Python, not training).

Not on the product path: spec, build, train, export and the other commands never import
this package; cli.cmd_bench imports it when `symbuilder bench` runs. The modules, by job:
harness (contenders, interleaved rounds, medians, paired ratios, the epoch clock),
contenders (train() and the hand-written Module.fit), twins/ (a registry of per-op Gluon and
torch builders, and the twin contenders), inference (ORT against Module forward), report
(tables, machine), run (run_bench); _product holds the product internals bench still needs.
"""
from .contenders import (hand_written_contender, symbuilder_contender, training_contenders,
                         twin_contenders)
from .harness import (GLUON, HAND_WRITTEN, HAND_WRITTEN_EXTRAS, HAND_WRITTEN_VAL, SB_AS_BUILT,
                      SB_TRAINING, TORCH, Contender, EpochClock, TrainingFigures, TrainingRun,
                      compare_training, effective_multipliers, input_names, input_statistics)
from .inference import InferenceFigures, compare_inference
from .report import (FOOTNOTE, BenchReport, inference_table, machine, machine_line,
                     training_table)
from .run import check_benchable, run_bench
from .twins import (TORCH_OPTIMIZERS, TwinStep, TwinUnsupported, gluon_contender, gluon_head,
                    gluon_loss, gluon_twin, registered_twin_ops, torch_available,
                    torch_contender, torch_head, torch_twin, twin_plan)

__all__ = [
    "GLUON", "HAND_WRITTEN", "HAND_WRITTEN_EXTRAS", "HAND_WRITTEN_VAL", "SB_AS_BUILT",
    "SB_TRAINING", "TORCH", "TORCH_OPTIMIZERS", "FOOTNOTE", "BenchReport", "Contender",
    "EpochClock", "InferenceFigures", "TrainingFigures", "TrainingRun", "TwinStep",
    "TwinUnsupported", "check_benchable", "compare_inference", "compare_training",
    "effective_multipliers", "gluon_contender", "gluon_head", "gluon_loss", "gluon_twin",
    "hand_written_contender", "inference_table", "input_names", "input_statistics", "machine",
    "machine_line", "registered_twin_ops", "run_bench", "symbuilder_contender",
    "torch_available", "torch_contender", "torch_head", "torch_twin", "training_contenders",
    "training_table", "twin_contenders", "twin_plan",
]
