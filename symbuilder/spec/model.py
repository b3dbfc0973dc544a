"""The spec's sections as typed dataclasses (spec/load.py reads a YAML file into them).

Every key of the spec contract (tests/contract/spec-example.yaml) keeps its meaning here. Semantic checks that need
MXNet (op attributes, optimizer and metric names) live in `spec.semantics`; this module
only knows the shape of the document.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Dict, List, Optional, Tuple

from ..defaults import DEFAULT_ATOL, DEFAULT_RTOL
from ..errors import SpecError
from ..defaults import OPSET_RANGE
from .fields import Reader, describe, dump_section, field
from .yamlload import Locations, Path


INPUT_DTYPES = ("float32", "uint8")  # input.dtype: uint8 takes raw pixels, cast in the graph
HEADS = ("SoftmaxOutput", "LinearRegressionOutput", "LogisticRegressionOutput",
         "MAERegressionOutput")
HEAD_DEFAULT_NAMES = {"SoftmaxOutput": "softmax", "LinearRegressionOutput": "linreg",
                      "LogisticRegressionOutput": "logreg", "MAERegressionOutput": "maereg"}
HEAD_DEFAULT_METRICS = {"SoftmaxOutput": ["acc", "ce"], "LinearRegressionOutput": ["mse", "mae"],
                        "LogisticRegressionOutput": ["mse"], "MAERegressionOutput": ["mae"]}
CONTEXT_RE = re.compile(r"^(cpu|gpu)\((\d+)\)$")
KVSTORES = ("local", "device", "dist_sync", "dist_async", "dist_device_sync", "nccl")
FORMATS = ("checkpoint", "onnx", "triton")
LAYER_KEYS = ("op", "name", "inputs", "params")
NAME_MAX = 255  # bytes in one file name (Linux, macOS, Windows' NTFS)
# Every file or folder name a build derives from the spec's name, at its longest: epoch
# numbers have at least 4 digits, a pid at most 7 (pid_max 4194304), mkdtemp/mkstemp add 8
# characters; the export's staging folder is `.<name>.tmp-<pid>-<random>`, moved aside as
# `.old` while the previous export is replaced.
DERIVED_FILE_NAMES = ("{name}-symbol.json", "{name}-{epoch}.params.tmp",
                      "{name}-{epoch}.states.tmp", "{name}-best.params.tmp", ".{name}.run",
                      ".{name}.data", ".{name}.onnx.tmp-XXXXXXXX",
                      ".{name}.tmp-9999999-XXXXXXXX.old")


@dataclasses.dataclass
class NormalizeSpec:
    """The frozen-affine BatchNorm input layer."""
    stats: str = field("str", "dataset: exact mean/var of the training split, fixed "
                       "(use_global_stats); running: BatchNorm moving averages updated while "
                       "training, warm-started from the exact statistics",
                       "dataset", choices=("dataset", "running"))
    momentum: float = field("float", "moving-average momentum, used by stats: running",
                            0.9, minimum=0.0, maximum=1.0, exclusive_maximum=True)
    eps: float = field("float", "added to the variance; exported as ONNX epsilon",
                       1e-3, minimum=0.0, exclusive_minimum=True)
    freeze: bool = field("bool", "true: beta=0 and gamma=1 frozen (lr_mult=0, wd_mult=0); "
                         "false: a learnable affine, for comparison", True)

    @classmethod
    def parse(cls, reader: Reader, value: Any, path: Path) -> Optional["NormalizeSpec"]:
        # `normalize: none` (or false/null) removes the input layer.
        if value is None or value is False or (isinstance(value, str) and value.lower() == "none"):
            return None
        if isinstance(value, str) and value in ("dataset", "running"):
            return cls(stats=value)
        return reader.fields_of(cls, value, path, extra_ok=False)[0]

    def dump(self) -> Any:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclasses.dataclass
class InputSpec:
    """A data input of the network."""
    shape: Tuple[int, ...] = field("shape", "one sample, no batch axis; (C, H, W) for images",
                                   example=[30])
    name: str = field("name", "the symbol's data variable", "data")
    normalize: Optional[NormalizeSpec] = field(NormalizeSpec, "the input layer; `none` for no "
                                               "input layer", default_factory=NormalizeSpec)
    columns: Optional[List[str]] = field("str_list", "csv: the feature columns this input "
                                         "reads, by name or glob pattern (px*), in this order; "
                                         "default: every column but the label", None)
    dtype: str = field("str", "the data variable's type: float32, or uint8 for raw bytes "
                       "(pixels 0..255; the graph casts them to float32 before the input "
                       "layer, and the checkpoint, deploy symbol and ONNX model take uint8)",
                       "float32", choices=INPUT_DTYPES)

    def dump(self) -> Any:
        out = {"name": self.name, "shape": list(self.shape),
               "normalize": self.normalize.dump() if self.normalize else "none"}
        if self.dtype != "float32":  # float32 specs dump as they always did
            out["dtype"] = self.dtype
        if self.columns is not None:
            out["columns"] = list(self.columns)
        return out


@dataclasses.dataclass
class ParamSpec:
    """Per-parameter settings of a layer (Caffe's `param { lr_mult decay_mult }`)."""
    lr_mult: Optional[float] = field("float", "learning-rate multiplier (written into the "
                                     "symbol as __lr_mult__)", None, minimum=0.0)
    wd_mult: Optional[float] = field("float", "weight-decay multiplier (__wd_mult__)", None,
                                     minimum=0.0)
    init: Optional[Dict[str, Any]] = field("mapping", "initializer, {name: normal, sigma: 0.01}",
                                           None)


@dataclasses.dataclass
class LayerSpec:
    """One MXNet operator. Every key other than op/name/inputs/params is an MXNet attribute."""
    op: str = field("str", "an MXNet operator name (mx.sym.<op>)", example="FullyConnected")
    name: Optional[str] = field("name", "node name; parameter keys derive from it "
                                "(fc1_weight). Optional: a unique one is generated", None)
    inputs: Optional[List[str]] = field("name_list", "earlier layers (or input names) this "
                                        "layer reads; default: the previous layer", None)
    params: Dict[str, ParamSpec] = field("mapping", "per-parameter settings, e.g. {weight: "
                                         "{lr_mult: 1, wd_mult: 1, init: {...}}}",
                                         default_factory=dict)
    attrs: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, reader: Reader, value: Any, path: Path) -> "LayerSpec":
        layer, rest = reader.fields_of(cls, value, path, extra_ok=True)
        params = {}
        for pname, pvalue in layer.params.items():
            params[pname] = reader.section(ParamSpec, pvalue, path + ("params", pname))
            if params[pname].init is not None:
                reader.read("mapping", params[pname].init, path + ("params", pname, "init"), {})
        layer.params = params
        layer.attrs = rest
        return layer

    def dump(self) -> Any:
        out: Dict[str, Any] = {"op": self.op}
        if self.name is not None:
            out["name"] = self.name
        if self.inputs is not None:
            out["inputs"] = list(self.inputs)
        out.update(self.attrs)
        if self.params:
            out["params"] = {k: dump_section(v) for k, v in self.params.items()}
        return out


@dataclasses.dataclass
class OutputSpec:
    """The loss head. Other keys are the head op's MXNet attributes (grad_scale, ...)."""
    op: str = field("str", "the loss head", choices=HEADS, example="SoftmaxOutput")
    name: Optional[str] = field("name", "head name; the label variable is <name>_label",
                                None)
    attrs: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, reader: Reader, value: Any, path: Path) -> "OutputSpec":
        out, rest = reader.fields_of(cls, value, path, extra_ok=True)
        if out.name is None:
            out.name = HEAD_DEFAULT_NAMES[out.op]
        out.attrs = rest
        return out

    @property
    def label_name(self) -> str:
        return f"{self.name}_label"

    def dump(self) -> Any:
        return {"op": self.op, "name": self.name, **self.attrs}


@dataclasses.dataclass
class SourceSpec:
    """A data file. Relative paths are relative to the spec's folder."""
    path: str = field("str", "the file: csv with a header row, npz with arrays X and y, a "
                      "memory-mapped npy, libsvm (label index:value ...), an im2rec .rec, "
                      "or a folder of class folders of images (image_folder)",
                      example="data/breast_cancer.csv")
    format: Optional[str] = field("str", "the data format, one registered reader each; "
                                  "default: from the file extension (.svm: libsvm, .rec: "
                                  "recordio, an unknown one: csv)", None)
    label: Optional[str] = field("str", "csv: the label column's name (every other column is a "
                                 "feature, in file order); npz: the label array's name "
                                 "(default y); npy: the label .npy file; libsvm: unused (the "
                                 "first value of each line)", None)
    features: Optional[str] = field("str", "npz: the feature array's name (default X)", None)
    stream: Optional[bool] = field("bool", "true: convert the file once into a memory-mapped "
                                   "float32 cache beside the export (export/.<name>.data/) "
                                   "and split it on disk, for data larger than memory; false: "
                                   "read it into memory; default: stream files over 256 MB",
                                   None)
    zero_based: Optional[bool] = field("bool", "libsvm: feature indices count from 0 "
                                       "(default: from 1, LibSVM's convention)", None)
    # Image formats (symbuilder.data.images); names and meanings are mx.io.ImageRecordIter's.
    idx: Optional[str] = field("str", "recordio: the .idx file (default: the .rec's name "
                               "with .idx, as im2rec writes it)", None)
    resize: Optional[int] = field("int", "recordio, image_folder: resize the shorter side to "
                                  "this first (then a centre crop to input.shape's H, W)",
                                  None, minimum=1)
    inter_method: Optional[int] = field("int", "recordio, image_folder: interpolation of "
                                        "resize: 0 nearest, 1 bilinear (default), 2 cubic, "
                                        "3 area, 4 lanczos4, 9 auto", None,
                                        choices=(0, 1, 2, 3, 4, 9))
    label_width: Optional[int] = field("int", "recordio: label values per record header "
                                       "(default 1)", None, minimum=1)
    convert_channels: Optional[bool] = field(
        "bool", "recordio, image_folder: decode an image whose channel count differs from "
        "input.shape's C (grey, grey + alpha, RGBA, palette, CMYK) to C channels, as "
        "ImageRecordIter does silently (grey replicated, alpha dropped); default: such an "
        "image is refused, named", None)
    # Augmentation (symbuilder.data.augment): data.train only, ImageRecordIter's meanings.
    # None (unset) means false, and keeps a dumped spec as it was before these keys.
    rand_crop: Optional[bool] = field("bool", "recordio, image_folder, data.train only: each "
                                      "epoch, crop input.shape's H, W at a uniformly random "
                                      "offset of the resized image instead of its centre "
                                      "(seeded by train.seed, the epoch and the batch; "
                                      "default false)", None)
    rand_mirror: Optional[bool] = field("bool", "recordio, image_folder, data.train only: each "
                                        "epoch, flip a sample left-right with probability 0.5 "
                                        "(seeded as rand_crop; default false)", None)


@dataclasses.dataclass
class DataSpec:
    """Training and validation data."""
    train: SourceSpec = field(SourceSpec, "the training data")
    val: Optional[SourceSpec] = field(SourceSpec, "explicit validation data (instead of "
                                      "val_fraction)", None)
    val_fraction: Optional[float] = field("float", "fraction of train held out for validation, "
                                          "split by train.seed (default 0.2 when val is absent)",
                                          None, minimum=0.0, maximum=1.0,
                                          exclusive_minimum=True, exclusive_maximum=True)

    @classmethod
    def parse(cls, reader: Reader, value: Any, path: Path) -> "DataSpec":
        data = reader.fields_of(cls, value, path, extra_ok=False)[0]
        if data.val is not None and data.val_fraction is not None:
            raise reader.fail(path + ("val_fraction",),
                              "give either val or val_fraction, not both")
        if data.val is None and data.val_fraction is None:
            data.val_fraction = 0.2
        return data


@dataclasses.dataclass
class SchedulerSpec:
    """A learning-rate schedule, stated in epochs (converted to MXNet's update counts)."""
    name: str = field("str", "factor: times `factor` every `step_epochs`; multifactor: times "
                      "`factor` at each of `epochs`; poly: polynomial decay to `final_lr`; "
                      "cosine: cosine decay to `final_lr`",
                      choices=("factor", "multifactor", "poly", "cosine"), example="cosine")
    step_epochs: Optional[int] = field("int", "factor: epochs between decays", None, minimum=1)
    epochs: Optional[List[int]] = field("int_list", "multifactor: the epochs after which the "
                                        "rate is multiplied by factor", None)
    factor: float = field("float", "factor, multifactor: the multiplier", 0.1, minimum=0.0,
                          maximum=1.0, exclusive_minimum=True)
    power: float = field("float", "poly: the polynomial's power", 2.0, minimum=0.0,
                         exclusive_minimum=True)
    final_lr: float = field("float", "poly, cosine: the rate at the last epoch", 0.0, minimum=0.0)
    warmup_epochs: int = field("int", "epochs of linear warm-up from warmup_begin_lr", 0,
                               minimum=0)
    warmup_begin_lr: float = field("float", "the rate warm-up starts from", 0.0, minimum=0.0)

    @classmethod
    def parse(cls, reader: Reader, value: Any, path: Path) -> "SchedulerSpec":
        sched = reader.fields_of(cls, value, path, extra_ok=False)[0]
        if sched.name == "factor" and sched.step_epochs is None:
            raise reader.fail(path, "missing required key 'step_epochs' (factor: epochs "
                                    "between decays)")
        if sched.name == "multifactor" and sched.epochs is None:
            raise reader.fail(path, "missing required key 'epochs' (multifactor: the epochs "
                                    "after which the rate is multiplied by factor)")
        if sched.epochs is not None and sorted(set(sched.epochs)) != sched.epochs:
            raise reader.fail(path + ("epochs",), "expected strictly increasing epochs, "
                                                  f"received {sched.epochs}")
        return sched


@dataclasses.dataclass
class EarlyStoppingSpec:
    """Stop when a validation metric stops improving; the best epoch is exported."""
    metric: str = field("str", "a validation metric: one of train.eval_metric, by its spec "
                        "name (acc, top_k_accuracy) or its reported name (accuracy, "
                        "top_k_accuracy_5)", example="accuracy")
    patience: int = field("int", "epochs without improvement before stopping", 5, minimum=1)
    mode: str = field("str", "max, min, or auto (max for accuracy-like metrics, min otherwise)",
                      "auto", choices=("auto", "max", "min"))
    min_delta: float = field("float", "the smallest change that counts as an improvement",
                             0.0, minimum=0.0)


@dataclasses.dataclass
class TrainSpec:
    """How Module.fit trains the network."""
    epochs: int = field("int", "training epochs", 10, minimum=1)
    batch_size: int = field("int", "samples per batch", 32, minimum=1)
    optimizer: str = field("str", "any MXNet optimizer name (mx.optimizer)", "sgd")
    optimizer_params: Dict[str, Any] = field("mapping", "the optimizer's keyword arguments "
                                             "(learning_rate, momentum, wd, ...)",
                                             default_factory=dict)
    initializer: Dict[str, Any] = field("mapping", "MXNet initializer, {name: xavier, "
                                        "magnitude: 2.0}", default_factory=lambda: {"name": "xavier"})
    eval_metric: Optional[List[Any]] = field("metric_list", "metrics, each a name (acc, ce, "
                                             "f1_macro: macro-F1 over the classes) or a mapping "
                                             "of a name and the constructor's parameters "
                                             "({name: top_k_accuracy, top_k: 5}); default: acc, "
                                             "ce for SoftmaxOutput, mse/mae for regression", None)
    seed: int = field("int", "seeds MXNet, numpy and the train/val split", 0, minimum=0,
                      maximum=2 ** 32 - 1)  # numpy's RandomState takes 32-bit seeds
    context: List[str] = field("str_list", "devices: [cpu(0)] or [gpu(0), gpu(1)]",
                               default_factory=lambda: ["cpu(0)"])
    kvstore: str = field("str", "MXNet kvstore", "local", choices=KVSTORES)
    checkpoint_every: int = field("int", "write a resumable checkpoint (params and optimizer "
                                  "state) every N epochs; 0 = never", 1, minimum=0)
    lr_scheduler: Optional[SchedulerSpec] = field(SchedulerSpec, "learning-rate schedule",
                                                  None)
    early_stopping: Optional[EarlyStoppingSpec] = field(EarlyStoppingSpec, "early stopping on "
                                                        "a validation metric", None)

    @classmethod
    def parse(cls, reader: Reader, value: Any, path: Path) -> "TrainSpec":
        train = reader.fields_of(cls, value, path, extra_ok=False)[0]
        for i, ctx in enumerate(train.context):
            if not CONTEXT_RE.match(ctx.replace(" ", "")):
                raise reader.fail(path + ("context", i) if "context" in (value or {}) and
                                  isinstance(value["context"], list) else path + ("context",),
                                  f"expected cpu(N) or gpu(N), received {describe(ctx)}")
        train.context = [c.replace(" ", "") for c in train.context]
        if "name" not in train.initializer:
            raise reader.fail(path + ("initializer",), "missing required key 'name' "
                              "(an MXNet initializer: xavier, uniform, normal, ...)")
        return train


@dataclasses.dataclass
class OnnxSpec:
    """ONNX export options."""
    opset: int = field("int", "ONNX opset", 17, minimum=OPSET_RANGE[0], maximum=OPSET_RANGE[1])
    dynamic_batch: bool = field("bool", "symbolic batch axis on inputs and outputs", True)


@dataclasses.dataclass
class VerifySpec:
    """ONNX Runtime vs MXNet parity check on held-out samples."""
    atol: float = field("float", "absolute tolerance: the build fails when an output's max abs "
                        "difference exceeds atol + rtol * its scale (the largest abs value "
                        "MXNet gives for it)",
                        DEFAULT_ATOL, minimum=0.0, maximum=1e-2)  # verify refuses more: manifest.py
    rtol: float = field("float", "tolerance relative to each output's scale (worst measured "
                        "over the gluon model zoo at random weights: 3.2e-6 at 224x224, 6.1e-6 "
                        "at 64x64)",
                        DEFAULT_RTOL, minimum=0.0, maximum=1e-2)
    samples: int = field("int", "held-out samples compared (at batch 1 and as one batch)", 64,
                         minimum=1)


@dataclasses.dataclass
class ExportSpec:
    """What `symbuilder build` writes into export/<name>/."""
    formats: List[str] = field("str_list", "checkpoint = <name>-symbol.json + "
                               "<name>-NNNN.params; onnx = <name>.onnx; triton = a Triton "
                               "model repository triton/<name>/ (config.pbtxt, 1/model.onnx)",
                               default_factory=lambda: ["checkpoint", "onnx"], choices=FORMATS)
    onnx: OnnxSpec = field(OnnxSpec, "ONNX options", default_factory=OnnxSpec)
    verify: VerifySpec = field(VerifySpec, "parity check", default_factory=VerifySpec)


@dataclasses.dataclass
class Spec:
    """A whole spec: the network, its data, training and export."""
    name: str = field("name", "artifact prefix: <name>-symbol.json, <name>-0030.params, "
                      "<name>.onnx", example="breast_cancer_mlp")
    layers: List[LayerSpec] = field(("list", LayerSpec), "the layers, in order")
    output: OutputSpec = field(OutputSpec, "the loss head")
    input: Optional[InputSpec] = field(InputSpec, "the data input and its normalization layer "
                                       "(or `inputs:` for several)", None)
    inputs: Optional[List[InputSpec]] = field(("list", InputSpec), "several data inputs, each "
                                              "with its own normalization layer and columns; "
                                              "layers name them in `inputs:`", None)
    data: Optional[DataSpec] = field(DataSpec, "training and validation data", None)
    train: TrainSpec = field(TrainSpec, "training", default_factory=TrainSpec)
    export: ExportSpec = field(ExportSpec, "export", default_factory=ExportSpec)
    # The document's key order (dataclass field order is constrained by defaults).
    KEY_ORDER = ("name", "input", "inputs", "layers", "output", "data", "train", "export")
    # Not part of the document: where it came from, for paths and error locations.
    source: str = dataclasses.field(default="<spec>", compare=False)
    locations: Locations = dataclasses.field(default_factory=Locations.empty, compare=False,
                                             repr=False)

    @property
    def all_inputs(self) -> List[InputSpec]:
        """The network's data inputs, whether the spec said `input:` or `inputs:`."""
        return [self.input] if self.input is not None else list(self.inputs or [])

    def input_path(self, index: int) -> Path:
        """The key path of input `index`: ('input',) or ('inputs', i)."""
        return ("input",) if self.input is not None else ("inputs", index)

    @property
    def base_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.source)) if os.path.exists(self.source) \
            else os.getcwd()

    def resolve(self, path: str) -> str:
        """A data path as the spec means it: relative to the spec's folder."""
        return path if os.path.isabs(path) else os.path.join(self.base_dir, path)

    @property
    def metrics(self) -> List[Any]:
        """train.eval_metric's entries (a name, or a mapping with `name`), or the head's."""
        return list(self.train.eval_metric or HEAD_DEFAULT_METRICS[self.output.op])

    def error(self, path: Path, message: str, cls: type = SpecError) -> SpecError:
        """A located error at a key path of this spec."""
        return self.locations.error(path, message, cls)

    def to_dict(self) -> Dict[str, Any]:
        out = {}
        for name in self.KEY_ORDER:
            if getattr(self, name) is not None:
                out[name] = dump_section(getattr(self, name))
        return out


def parse_spec(data: Any, locations: Locations) -> Spec:
    """Typed Spec from located YAML data (structure only; see semantics.check_spec)."""
    reader = Reader(locations)
    spec, _ = reader.fields_of(Spec, data, (), extra_ok=False)
    if (spec.input is None) == (spec.inputs is None):
        raise reader.fail((), "give either input (one data input) or inputs (a list), not "
                              "both" if spec.input is not None else "missing required key "
                              "'input' (the data input and its normalization layer)")
    if spec.inputs is not None:
        if not spec.inputs:
            raise reader.fail(("inputs",), "expected at least one input")
        seen: Dict[str, int] = {}
        for i, item in enumerate(spec.inputs):
            if item.name in seen:
                raise reader.fail(("inputs", i, "name"), f"duplicate input name '{item.name}' "
                                                         f"(also inputs[{seen[item.name]}])")
            seen[item.name] = i
            if len(spec.inputs) > 1 and item.columns is None:
                raise reader.fail(("inputs", i), "missing required key 'columns' (with several "
                                                 "inputs, each names the csv columns it reads)")
    spec.source = locations.source
    spec.locations = locations
    return spec
