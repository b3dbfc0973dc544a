"""The whole comparison for one spec: what `symbuilder bench` runs."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from ..data import load_data
from ..training.distributed import is_dist
from .contenders import training_contenders, twin_contenders
from .harness import Contender, Say, compare_training
from .inference import compare_inference
from .report import BenchReport, machine


def check_benchable(spec: Any) -> None:
    """Refuse, as a located spec error, what one local process cannot benchmark."""
    if is_dist(spec.train.kvstore):
        raise spec.error(("train", "kvstore"), f"bench trains in one process, but "
                         f"train.kvstore is '{spec.train.kvstore}' (a parameter-server job); "
                         "bench it with --set train.kvstore=local")


def run_bench(spec: Any, *, repeats: int = 3, epochs: int = 3, inference_repeats: int = 5,
              say: Optional[Say] = None, data: Any = None, gluon: bool = True,
              torch: bool = True, extra_contenders: Sequence[Contender] = ()) -> BenchReport:
    """The whole comparison for one spec; `extra_contenders` join the interleaved rounds."""
    check_benchable(spec)
    info = machine()
    data = data if data is not None else load_data(spec)
    contenders = training_contenders(spec, data)
    twins, skipped = twin_contenders(spec, data, gluon=gluon, torch=torch)
    contenders += twins + list(extra_contenders)
    training = compare_training(contenders, epochs=epochs, repeats=repeats, say=say)
    result = contenders[1].last["result"]
    source = data.val if len(data.val) else data.train
    samples = {n: v[:256] for n, v in source.inputs.items()}
    inference = compare_inference(spec, result.symbol, result.arg_params, result.aux_params,
                                  samples, repeats=inference_repeats, say=say)
    return BenchReport(spec.name, len(data.train), epochs, repeats, training, inference,
                       info, skipped)
