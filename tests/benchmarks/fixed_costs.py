"""Fixed per-epoch costs, each measured alone (dev only, for bench_all.py): what explains a
gap between symbuilder and its same-work hand-written twin on a small data set."""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any, Callable, Dict


def fixed_costs(spec: Any, data: Any, *, repeats: int = 15) -> Dict[str, float]:
    """Median milliseconds, each measured alone after a warm-up:
    - 'seed': mx.random.seed + waitall, which train() does at every epoch start (seed_epoch:
      dropout masks as a function of (seed, epoch), for bit-identical resume); the engine
      work lands inside the epoch's clock;
    - 'symbuilder checkpoint': RunStore.save (params, optimizer state with the optimizer,
      state.json, two fsyncs, old checkpoints removed), what 'as built' adds per epoch;
    - 'do_checkpoint': mx.callback.do_checkpoint's save (symbol JSON + params), the
      hand-written twin's;
    - 'build_symbol': spec -> symbol with attribute checks and shape inference, once per
      train() call (the hand-written contenders build theirs outside the clock);
    - 'symbuilder validation': train.evaluate (Module.predict on a fresh iterator, padding
      stripped, metrics over the whole split) against 'Module.score' (eval_data's path:
      metrics updated per batch, the padded rows of the last batch counted too)."""
    import mxnet as mx
    from symbuilder.bench import input_names
    from symbuilder.bench._product import global_initializer, optimizer_settings
    from symbuilder.graph import build_symbol
    from symbuilder.training.runstore import RunState, RunStore
    from symbuilder.data.iterators import labels_for, make_iter
    from symbuilder.inputlayer import fixed_param_names
    from symbuilder.training.loop import evaluate
    symbol = build_symbol(spec)
    batch_size = min(spec.train.batch_size, len(data.train))
    it = make_iter(spec, data.train, batch_size=batch_size, shuffle=False)
    module = mx.mod.Module(symbol, data_names=input_names(spec),
                           label_names=[spec.output.label_name], context=mx.cpu(),
                           fixed_param_names=fixed_param_names(spec) or None)
    module.bind(data_shapes=it.provide_data, label_shapes=it.provide_label)
    module.init_params(global_initializer(spec), allow_missing=True)
    name, params = optimizer_settings(spec, -(-len(data.train) // batch_size))
    module.init_optimizer(kvstore=spec.train.kvstore, optimizer=name, optimizer_params=params)
    batch = next(iter(it))
    module.forward_backward(batch)
    module.update()  # optimizer state exists, as after an epoch
    mx.nd.waitall()

    def median_ms(fn: Callable[[int], None]) -> float:
        fn(0)
        times = []
        for i in range(1, repeats + 1):
            mx.nd.waitall()
            t = time.perf_counter()
            fn(i)
            mx.nd.waitall()
            times.append(time.perf_counter() - t)
        return 1e3 * statistics.median(times)

    out = {"seed": median_ms(lambda i: mx.random.seed(i)),
           "build_symbol": median_ms(lambda i: build_symbol(spec))}
    with tempfile.TemporaryDirectory(prefix="symbuilder-bench-") as tmp:
        store = RunStore(os.path.join(tmp, "run"), spec)
        store.start_fresh()
        out["symbuilder checkpoint"] = median_ms(
            lambda i: store.save(module, i + 1, RunState(epoch=i + 1)))
        prefix = os.path.join(tmp, "hand", spec.name)
        os.makedirs(os.path.dirname(prefix))
        save = mx.callback.do_checkpoint(prefix)
        out["do_checkpoint"] = median_ms(
            lambda i: save(i, symbol, *module.get_params()))
    out["symbuilder validation"] = median_ms(lambda i: evaluate(spec, module, data.val,
                                                                batch_size))
    names = input_names(spec)
    val = mx.io.NDArrayIter({n: data.val.inputs[n] for n in names},
                            {spec.output.label_name: labels_for(spec, data.val)}, batch_size,
                            shuffle=False, last_batch_handle="pad")

    def score(i: int) -> None:
        val.reset()
        module.score(val, mx.metric.create(list(spec.metrics)))
    out["Module.score"] = median_ms(score)
    return out
