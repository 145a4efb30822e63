"""Export a JAX policy to kinfer's `.kinfer` format without TensorFlow, and run `.kinfer` files.

kinfer's own exporter goes jax2tf → tf2onnx, which needs jax < 0.7 and TensorFlow (which segfaults beside xax's
logger). Here the init and step functions are converted with jax2onnx in the training environment, the graph inputs
are renamed to kinfer's fixed names (`joint_angles`, `joint_angular_velocities`, `projected_gravity`, `gyroscope`,
`command`, `carry`, ...) and the result is validated and packed by `kinfer.export.serialize.pack`.

Everything the policy keeps between steps (recurrent state, filters, delay buffers) must be inside the flat carry.
"""

import datetime
import inspect
import json
import logging
import tarfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from jaxtyping import Array
from kinfer.export.serialize import pack
from kinfer.rust_bindings import ModelProviderABC, PyInputType, PyModelMetadata, PyModelRunner

__all__ = [
    "KINFER_INPUT_NAMES",
    "ExportError",
    "KinferPolicy",
    "KinferRunner",
    "KinferSession",
    "export_kinfer",
    "function_to_onnx",
]

# The step-function inputs kinfer 0.6.1 knows (kinfer/rust/src/types.rs); shapes come from PyInputType.
KINFER_INPUT_NAMES = (
    "joint_angles",
    "joint_angular_velocities",
    "projected_gravity",
    "accelerometer",
    "gyroscope",
    "command",
    "time",
    "carry",
)
_ONNX_OPSET = 17  # onnxruntime 1.20 (kinfer's pin) runs opsets up to 21; 17 keeps older runtimes working too


class ExportError(ValueError):
    """A policy cannot be exported, or a file is not a valid `.kinfer`."""


@dataclass(frozen=True)
class KinferPolicy:
    """A deployable policy: `init_fn() -> carry` and `step_fn(<kinfer inputs...>, carry) -> (action, carry)`.

    `step_fn`'s parameter names must be kinfer input names and it must take `carry` last. Actions are in the order
    of `joint_names`; `carry` is float32 of shape (carry_size,).
    """

    init_fn: Callable[[], Array]
    step_fn: Callable[..., tuple[Array, Array]]
    joint_names: tuple[str, ...]
    command_names: tuple[str, ...]
    carry_size: int

    @property
    def metadata(self) -> PyModelMetadata:
        return PyModelMetadata(
            joint_names=list(self.joint_names),
            command_names=list(self.command_names),
            carry_size=[self.carry_size],
        )

    @property
    def step_input_names(self) -> tuple[str, ...]:
        names = tuple(inspect.signature(self.step_fn).parameters)
        unknown = [n for n in names if n not in KINFER_INPUT_NAMES]
        if unknown:
            raise ExportError(f"step_fn parameters {unknown} are not kinfer inputs; allowed: {KINFER_INPUT_NAMES}")
        if not names or names[-1] != "carry":
            raise ExportError(f"step_fn must take `carry` as its last parameter, got {names}")
        return names

    def input_shape(self, name: str) -> tuple[int, ...]:
        return tuple(PyInputType(name).get_shape(self.metadata))


def _rename_graph_values(model: onnx.ModelProto, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    graph = model.graph
    if len(graph.input) != len(inputs) or len(graph.output) != len(outputs):
        raise ExportError(
            f"ONNX graph has {len(graph.input)} inputs / {len(graph.output)} outputs, "
            f"expected {len(inputs)} / {len(outputs)}"
        )
    renames = {v.name: new for v, new in zip(graph.input, inputs, strict=True)}
    for value in graph.input:
        value.name = renames[value.name]
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
    # Outputs get their names through an Identity node, so an output that is a constant or an input stays valid.
    for value, new_name in zip(graph.output, outputs, strict=True):
        old_name = renames.get(value.name, value.name)
        graph.node.append(onnx.helper.make_node("Identity", [old_name], [new_name], name=f"output_{new_name}"))
        value.name = new_name


def function_to_onnx(
    fn: Callable[..., object],
    input_names: Sequence[str],
    input_shapes: Sequence[tuple[int, ...]],
    output_names: Sequence[str],
) -> onnx.ModelProto:
    """Trace `fn` (float32 inputs of the given shapes) to an ONNX model whose inputs/outputs carry the given names."""
    try:
        from jax2onnx import to_onnx
    except ImportError as err:
        raise ExportError(
            "jax2onnx is not installed; install the locked environment (python3 bootstrap.py) or "
            "`pip install --no-deps jax2onnx==0.10.4 onnx-ir==0.1.16 einops==0.8.1`"
        ) from err
    plugin_logger = logging.getLogger("jax2onnx.plugins.plugin_system")
    previous = plugin_logger.level
    plugin_logger.setLevel(logging.ERROR)  # its example plugins import flax, which this stack leaves out
    try:
        specs = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in input_shapes]
        with warnings.catch_warnings():  # its plugins' float64 examples, loaded with every conversion, warn on import
            warnings.filterwarnings("ignore", message="Explicitly requested dtype float64")
            model = to_onnx(fn, specs, opset=_ONNX_OPSET)
    finally:
        plugin_logger.setLevel(previous)
    _rename_graph_values(model, input_names, output_names)
    onnx.checker.check_model(model, full_check=True)
    return model


def export_kinfer(policy: KinferPolicy, path: str | Path, *, overwrite: bool = False) -> Path:
    """Convert, validate (kinfer's `pack`) and write `policy` as a `.kinfer` file; never overwrites unless asked."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (or --overwrite) to replace it")
    if policy.carry_size < 1:
        raise ExportError(f"carry_size must be >= 1, got {policy.carry_size}")
    names = policy.step_input_names
    shapes = [policy.input_shape(n) for n in names]
    if shapes[-1] != (policy.carry_size,):
        raise ExportError(f"carry shape {shapes[-1]} != carry_size {policy.carry_size}")

    init_carry = jax.eval_shape(policy.init_fn)
    if init_carry.shape != (policy.carry_size,):
        raise ExportError(f"init_fn returns shape {init_carry.shape}, expected ({policy.carry_size},)")
    action, carry = jax.eval_shape(policy.step_fn, *(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes))
    if action.shape != (len(policy.joint_names),) or carry.shape != (policy.carry_size,):
        raise ExportError(
            f"step_fn returns action {action.shape} / carry {carry.shape}; expected "
            f"({len(policy.joint_names)},) / ({policy.carry_size},)"
        )

    init_onnx = function_to_onnx(policy.init_fn, [], [], ["carry"])
    step_onnx = function_to_onnx(policy.step_fn, names, shapes, ["action", "next_carry"])
    data = pack(init_fn=init_onnx, step_fn=step_onnx, metadata=policy.metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


class KinferSession:
    """Run a `.kinfer` file with onnxruntime (the same ONNX graphs kinfer's Rust runtime executes)."""

    def __init__(self, path: str | Path) -> None:
        import onnxruntime as ort

        path = Path(path)
        try:
            with tarfile.open(path, "r:gz") as tar:
                files = {m.name: tar.extractfile(m) for m in tar.getmembers()}
                missing = {"init_fn.onnx", "step_fn.onnx", "metadata.json"} - set(files)
                if missing:
                    raise ExportError(f"{path} is not a .kinfer file: missing {sorted(missing)}")
                blobs = {name: f.read() for name, f in files.items() if f is not None}
        except (tarfile.TarError, OSError, EOFError) as err:
            raise ExportError(f"Corrupt .kinfer file {path}: {err}") from err
        self.metadata: dict = json.loads(blobs["metadata.json"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._init = ort.InferenceSession(blobs["init_fn.onnx"], options)
        self._step = ort.InferenceSession(blobs["step_fn.onnx"], options)
        self.input_names = tuple(i.name for i in self._step.get_inputs())
        self.input_shapes = {i.name: tuple(i.shape) for i in self._step.get_inputs()}

    def init(self) -> np.ndarray:
        return self._init.run(None, {})[0]

    def step(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ExportError(f"missing step inputs {missing}")
        feeds = {n: np.asarray(inputs[n], dtype=np.float32) for n in self.input_names}
        action, carry = self._step.run(None, feeds)
        return action, carry


class _GivenInputs(ModelProviderABC):
    """Hands kinfer's runtime the inputs its caller set, and keeps the action it returns."""

    def __new__(cls, *args: object, **kwargs: object) -> "_GivenInputs":
        return super().__new__(cls)  # the pyo3 base class takes no constructor arguments

    def __init__(self) -> None:
        super().__init__()
        self.values: Mapping[str, np.ndarray] = {}
        self.action: np.ndarray | None = None

    def get_inputs(self, input_types: list[str], metadata: PyModelMetadata) -> Mapping[str, np.ndarray]:
        missing = [name for name in input_types if name not in self.values]
        if missing:
            raise ExportError(f"the model asks for inputs that were not given: {missing}")
        return {name: self.values[name] for name in input_types}

    def take_action(self, action: np.ndarray, metadata: PyModelMetadata) -> None:
        self.action = np.asarray(action, dtype=float)


class KinferRunner:
    """A `.kinfer` stepped by kinfer's own Rust runtime, one control step at a time, on inputs the caller reads.

    The runtime runs the init function and feeds the carry back itself; `step` returns the action. For loops
    that keep their own clock (the deployment loop, the sim-to-sim gate), unlike `PyModelRunner.run`'s.
    """

    def __init__(self, path: str | Path) -> None:
        self._inputs = _GivenInputs()
        self._runner = PyModelRunner(str(path), self._inputs, None)
        self._initialised = False

    def step(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """One step on `inputs` (kinfer input name -> float32 array); returns the action (float64)."""
        self._inputs.values = inputs
        self._inputs.action = None
        if self._initialised:
            self._runner.step_and_take_action()
        else:
            # kinfer 0.6.1 runs the init function only inside `run()`; `step_and_take_action` alone would start
            # from an uninitialised carry buffer. A one-step `run` with no period is init + the first step.
            self._runner.run(datetime.timedelta(0), total_steps=1)
            self._initialised = True
        if self._inputs.action is None:
            raise ExportError("kinfer's runtime returned no action")
        return self._inputs.action
