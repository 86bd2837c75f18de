"""One onnxruntime session that returns every requested feature map at once.

The light model (weights stay in the file, see ``onnxfile``) is cut to the
nodes the requested layers' outputs depend on, and those tensors become its
outputs (``subgraph.cut``), so one run gives them all and the rest of the
graph (a classifier head, say) is neither read nor run. Providers are chosen explicitly: ``cuda`` never falls back
to the CPU in silence.
"""

from __future__ import annotations

import contextlib
import re
import sys
import numpy as np

from .errors import InspectorError

DEVICES = ("auto", "cpu", "cuda")
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


# The model's input and how it is fed live in inspector.inputs (one resolver for every command).
from .inputs import ModelInput, model_input, session_inputs  # noqa: E402,F401 - re-exported


def _log_severity(verbose: bool) -> int:
    # 0 verbose .. 4 fatal. Quiet by default: a failed CUDA provider logs an
    # error that we turn into our own, clearer message.
    return 1 if verbose else 4


# onnxruntime's full optimisation level re-lays every conv kernel out for its
# blocked (NCHWc) kernels, a second copy of the conv weights. Faster, and cheap for
# VGG16 (58 MB of conv kernels); for models whose conv kernels pass this size the
# extended level (no relayout) keeps the session at about one copy of the weights.
RELAYOUT_LIMIT = 1 << 30


def conv_kernel_bytes(onnx_file, model=None) -> int:
    """Bytes of the 4-D (conv-kernel-shaped) initializers of ``model`` (default: the whole file's),
    from their declared shapes."""
    import math

    from onnx import helper

    total = 0
    tensors = onnx_file.initializers.values() if model is None else model.graph.initializer
    for tensor in tensors:
        if len(tensor.dims) == 4:
            try:
                itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
            except (KeyError, TypeError, ValueError):
                continue
            total += math.prod(int(d) for d in tensor.dims) * itemsize
    return total


_SHARED_ARENA: bool | None = None


def _shared_cpu_arena() -> bool:
    """One process-wide CPU arena that grows by what is asked, not to the next power of two.

    onnxruntime's default arena rounds every extension up and fragments when a run
    returns many large outputs: an audit streaming batches of all 13 VGG16 maps grew
    from 3.47 GB (32 images) to 3.87 GB (160 images). Growing by what is requested keeps
    it flat (3.37 GB either way) at the same speed. Registered once; False where this
    onnxruntime cannot (the sessions then keep their own default arena).
    """
    global _SHARED_ARENA
    if _SHARED_ARENA is None:
        import onnxruntime as ort

        try:
            memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            same_as_requested = 1  # kSameAsRequested; 0 is kNextPowerOfTwo
            ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, same_as_requested, -1, -1))
            _SHARED_ARENA = True
        except Exception:  # noqa: BLE001 - an older onnxruntime: the default arena is fine
            _SHARED_ARENA = False
    return _SHARED_ARENA


# onnxruntime's intra-op threads for every session of this process; None: its default (one a core).
# A Ray actor of the audit sets it to its share of the node's CPUs (audit/distributed.py).
INTRA_OP_THREADS: int | None = None


def session_options(folder: str, verbose: bool = False, relayout: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = _log_severity(verbose)
    if INTRA_OP_THREADS:
        options.intra_op_num_threads = INTRA_OP_THREADS
    if not relayout:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    # Light models refer to their weights by path; resolve them next to the model.
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
    return options


@contextlib.contextmanager
def one_blas_thread():
    """NumPy's BLAS on one thread for the duration: the audit and the CAMs, whose products run between
    or beside onnxruntime's runs, hold it (from the command line and the API alike).

    OpenBLAS's threads spin for a while after each matrix product (the CAMs' upsampling, the audit's
    filter similarities) and took the cores from onnxruntime's own threads: ScoreCAM's 16 batched
    runs of ResNet-18 took 2.2 s instead of 1.4 s on 2 cores. The products here are small; one
    thread is enough for them.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency; without it everything still runs
        yield
        return
    import numpy  # noqa: F401 - loaded first: threadpoolctl limits the libraries already loaded

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def wants_cuda(device: str, available: list[str] | None = None) -> bool:
    """Whether a session for ``device`` (auto, cpu, cuda) will ask for CUDAExecutionProvider."""
    if device == "cuda":
        return True
    if device != "auto":
        return False
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    return _CUDA in available


def create_session(model_bytes: bytes, folder: str, device: str = "auto", verbose: bool = False,
                   relayout: bool = True, small_outputs: bool = False):
    """(session, provider name). ``cuda`` fails loudly instead of falling back.

    ``small_outputs``: the run returns small reductions of its big tensors (the audit's statistics),
    so every big tensor dies inside the run. Then onnxruntime's memory pattern (one block sized for the
    planned peak, kept from run to run) and the shared arena (grown by what outputs that outlive the
    run need) only hold memory: without them 16 VGG16 images peak at 1.1 GB instead of 2.7.
    """
    import onnxruntime as ort

    if device not in DEVICES:
        raise InspectorError(f"unknown device '{device}': use {', '.join(DEVICES)}")
    ort.set_default_logger_severity(_log_severity(verbose))
    available = ort.get_available_providers()
    if device == "cuda" and _CUDA not in available:
        raise InspectorError(
            "--device cuda: this onnxruntime has no CUDAExecutionProvider "
            f"(installed providers: {', '.join(available)}); install onnxruntime-gpu "
            "(and uninstall onnxruntime) on a machine with CUDA 12 and cuDNN 9, or use --device cpu")
    want_cuda = wants_cuda(device, available)
    if want_cuda:
        _preload_cuda_libraries(verbose)
    providers = [_CUDA, _CPU] if want_cuda else [_CPU]
    try:
        options = session_options(folder, verbose, relayout)
        if small_outputs:
            options.enable_mem_pattern = False
        elif not want_cuda and _shared_cpu_arena():  # proven on the CPU; CUDA keeps its own allocators
            options.add_session_config_entry("session.use_env_allocators", "1")
        session = ort.InferenceSession(model_bytes, options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/RuntimeException types
        raise InspectorError(f"onnxruntime cannot load the model: {_first_line(exc)}") from None
    active = session.get_providers()
    if want_cuda and _CUDA not in active:
        if device == "cuda":
            raise InspectorError(
                "--device cuda: CUDAExecutionProvider is installed but failed to start (CUDA or cuDNN "
                "libraries missing or no GPU visible); rerun with --verbose to see onnxruntime's "
                "reason, or use --device cpu")
        print("inspector: CUDA is not usable here; running on CPUExecutionProvider", file=sys.stderr)
    return session, active[0]


def _preload_cuda_libraries(verbose: bool) -> None:
    """Load CUDA/cuDNN from pip's nvidia-* packages when that is where they are.

    onnxruntime-gpu finds system CUDA by itself; ``preload_dlls`` (1.21+) also
    finds the libraries that pip installs beside torch or onnxruntime-gpu[cuda].
    """
    import contextlib
    import io

    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            preload()
    except Exception:  # noqa: BLE001 - missing libraries are reported when the session starts
        pass
    if verbose and sink.getvalue():
        print(sink.getvalue(), file=sys.stderr, end="")


# onnxruntime prefixes many messages with the C++ source line and function signature.
_ORT_SOURCE = re.compile(r"(?:Load model from \S+ failed:)?/onnxruntime_src/\S+:\d+ .*?\)\s(?=[A-Z])")


def _first_line(exc: Exception) -> str:
    text = _ORT_SOURCE.sub("", str(exc)).strip().splitlines()
    line = text[0] if text else exc.__class__.__name__
    return line if len(line) <= 400 else line[:400] + "..."


def check_opsets(model) -> None:
    """Refuse an ai.onnx opset newer than any this onnx release knows (onnxruntime only half-supports them)."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and not 1 <= opset.version <= newest:
            raise InspectorError(
                f"the model declares ai.onnx opset {opset.version}, which is not a released opset "
                f"(this onnx knows 1..{newest}); re-export it with a released opset, or upgrade onnx and onnxruntime")


def add_outputs(model, tensors: list[str]):
    """A copy of the (light) model whose graph also outputs ``tensors``."""
    import onnx
    from onnx import helper

    modified = onnx.ModelProto()
    modified.CopyFrom(model)
    present = {o.name for o in modified.graph.output}
    for name in tensors:
        if name not in present:
            # No type: onnxruntime infers it, and the dtype may be anything (uint8 for QLinearConv).
            modified.graph.output.append(helper.make_empty_tensor_value_info(name))
            present.add(name)
    return modified


def _fused(onnx_file, layers, outputs, device, verbose):
    from . import fused

    return fused.fused_model(onnx_file, layers, outputs, verbose) if fused.wanted(layers, device) else None


def to_channel_first(array: np.ndarray, perm: tuple[int, ...] | None) -> np.ndarray:
    """Undo the layout Transposes between a conv (NCHW) and the tensor shown."""
    if perm is None:
        return array
    inverse = tuple(int(i) for i in np.argsort(perm))
    return np.ascontiguousarray(np.transpose(array, inverse))


def run(session, feeds: dict, outputs: list[str]) -> dict[str, np.ndarray]:
    try:
        values = session.run(outputs, feeds)
    except Exception as exc:  # onnxruntime's own exception types
        raise InspectorError(f"onnxruntime failed to run the model: {_first_line(exc)}") from None
    return dict(zip(outputs, values))


def dequantize_into(q: np.ndarray, scale: np.float32, zero: np.float32, out: np.ndarray) -> np.ndarray:
    """``(q - zero) * scale`` in float32 into ``out``: the same values as ``run``'s own dequantization."""
    np.subtract(q, zero, out=out, dtype=np.float32)
    np.multiply(out, scale, out=out)
    return out


class FeatureMapSession:
    """A session over the part of the light model that the requested layers' outputs depend on.

    With ``model_outputs=True`` the model's own outputs (and all they depend on)
    are kept too, and ``run_with_outputs`` returns them.

    ``run(batch)`` returns ``{layer name: (N, C, H, W) float32}`` from ONE
    onnxruntime run, channel-first whatever the model's layout.
    """

    small_outputs = False  # see create_session; a subclass that reduces the maps in the graph says True

    def __init__(self, onnx_file, layers, model_input: ModelInput, device="auto", verbose=False,
                 dequantizers: dict | None = None, model_outputs: bool = False):
        self.layers = list(layers)
        self.input = model_input
        self._needed: list[str] | None = None
        # The model's own outputs (class scores, detections) only when a caller asks:
        # maps alone never need the part of the graph after the last requested layer.
        self.model_outputs = [o.name for o in onnx_file.model.graph.output] if model_outputs else []
        self.outputs = list(dict.fromkeys([*(layer.output for layer in self.layers), *self.model_outputs]))
        check_opsets(onnx_file.model)
        from .subgraph import cut

        self.fetch: dict[str, str] = {}  # requested tensor -> the tensor the session returns for it
        self.dequantizers = dict(dequantizers or {})
        fused = _fused(onnx_file, self.layers, self.outputs, device, verbose)
        if fused is not None:  # a QDQ model on the CPU: onnxruntime's int8 kernels (see inspector.fused)
            model, self.fetch, fused_dequantizers = fused
            self.dequantizers.update(fused_dequantizers)
        else:
            model = onnx_file.model
        # Only the ancestors of what is asked for: the other weights are never read.
        model = cut(model, [self.fetch.get(t, t) for t in self.outputs], keep_inputs=[model_input.name])
        model = self.finish_graph(model)
        kernels = conv_kernel_bytes(onnx_file, model)
        self.relayout = kernels <= RELAYOUT_LIMIT
        if not self.relayout and verbose:
            print(f"inspector: {kernels / 2**30:.1f} GiB of conv kernels: onnxruntime's extended optimisation "
                  "level, without the NCHWc relayout that would copy them", file=sys.stderr)
        self.session, self.provider = create_session(
            onnx_file.serialized(model) if fused is None else model.SerializeToString(), onnx_file.folder, device,
            verbose, self.relayout, self.small_outputs)

    def finish_graph(self, model):
        """The cut model as the session will run it: a subclass may add nodes and outputs."""
        return model

    def run(self, batch: np.ndarray, dequantize: bool = True) -> dict[str, np.ndarray]:
        """``{layer name: (N, C, H, W) float32}`` from one run.

        ``dequantize=False``: the layers in ``self.dequantizers`` stay the integers onnxruntime's
        fused kernels return (channel-first); ``(q - zero) * scale`` in float32 is the caller's
        (``dequantize_into``), e.g. one image at a time into a reused buffer.
        """
        return self.run_with_outputs(batch, dequantize)[0]

    def run_with_outputs(self, batch: np.ndarray, dequantize: bool = True
                         ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(maps by layer name, the model's own outputs by name) from one run.

        The second dict is empty unless the session was made with ``model_outputs=True``.
        """
        fetched = list(dict.fromkeys(self.fetch.get(name, name) for name in self.outputs))
        values = self.run_fetched(batch, fetched)
        own = {name: values[self.fetch.get(name, name)] for name in self.model_outputs}
        result = {layer.name: self.map_of(layer, values[self.fetch.get(layer.output, layer.output)], dequantize)
                  for layer in self.layers}
        return result, own

    def feeds(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The image batch (a fixed batch filled) and the other inputs this session needs."""
        if self._needed is None:
            self._needed = session_inputs(self.session)
        return self.input.feeds(batch, self._needed)

    def run_fetched(self, batch: np.ndarray, fetched: list[str]) -> dict[str, np.ndarray]:
        """``fetched`` tensors for ``batch``, one run per fixed batch where the model fixes it; only the
        real images' rows are returned (a fixed batch is filled with copies, see ``ModelInput.filled``)."""
        fixed, count = self.input.batch, batch.shape[0]
        if fixed is None or fixed == count:
            return run(self.session, self.feeds(batch), fetched)
        parts = [run(self.session, self.feeds(batch[start:start + fixed]), fetched)
                 for start in range(0, count, fixed)]
        return {name: np.concatenate([part[name][:min(fixed, count - i * fixed)] for i, part in enumerate(parts)])
                for name in fetched}

    def map_of(self, layer, array: np.ndarray, dequantize: bool = True) -> np.ndarray:
        """The layer's maps, channel-first float32, from the array the session returned for it."""
        if layer.name in self.dequantizers and not dequantize:
            return to_channel_first(array, layer.output_perm)
        if layer.name in self.dequantizers:
            scale, zero = self.dequantizers[layer.name]
            array = array.astype(np.float32)  # one new array, then in place (twice as fast as a table lookup)
            array -= zero
            array *= scale
        array = to_channel_first(array, layer.output_perm)
        return np.asarray(array, dtype=np.float32)
