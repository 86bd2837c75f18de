"""The audit on Ray (``--ray``), on a real local cluster (a head and one added node, 1 CPU each).

Ray is an optional extra (pip install 'inspector-cnn[ray]') that `make .venv` installs: these tests skip
where it is missing, and fail instead where INSPECTOR_REQUIRE_MODELS=1 (CI, .ci/run: its environment
must run them). The Ray audit must equal the single-process audit: counts, minimum, maximum and verdicts
exactly, float sums to 1e-12 relative; an actor killed mid-batch must still count every image exactly once."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from PIL import Image

try:
    import ray
    import ray.data  # noqa: F401
except ImportError:
    if os.environ.get("INSPECTOR_REQUIRE_MODELS", "0") not in ("", "0"):
        raise  # CI builds the environment with the ray extra: a missing Ray is a broken environment
    pytest.skip("Ray is not installed (pip install 'inspector-cnn[ray]')", allow_module_level=True)

from inspector.audit import audit, distributed  # noqa: E402
from inspector.errors import InspectorError  # noqa: E402
from test_audit import small_net  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    kwargs = {"include_dashboard": False}
    # Ray starts its workers at niceness 15: on a machine shared with other jobs the actors then crawl
    # (a node-removal run took 13 minutes at load 90). The tests' actors at the tests' own priority.
    niceness = os.environ.get("RAY_worker_niceness")
    os.environ["RAY_worker_niceness"] = "0"
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, **kwargs})
    made.add_node(num_cpus=1)
    ray.init(address=made.address, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's actor, shipped by value
    yield made
    ray.shutdown()
    made.shutdown()
    if niceness is None:
        os.environ.pop("RAY_worker_niceness", None)
    else:
        os.environ["RAY_worker_niceness"] = niceness


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray_images")
    r = np.random.default_rng(7)
    for i in range(IMAGES):
        Image.fromarray(r.integers(0, 256, (14 + i % 5, 16, 3), dtype=np.uint8)).save(folder / f"img{i:04d}.png")
    return [str(folder / name) for name in sorted(os.listdir(folder))]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    import onnx

    path = tmp_path_factory.mktemp("ray_model") / "small.onnx"
    onnx.save(small_net(dead={"conv2": [3, 5]})[0], path)
    return str(path)


# Issue 21's figure: 1,000 images (936 judged, 64 held out to verify), 38 batches over the two nodes.
IMAGES = 1000
KWARGS = dict(batch=25, preprocess="tf", device="cpu", quiet=True)


def assert_same_statistics(on_ray, here):
    assert on_ray.images == here.images
    for a, b in zip(on_ray.layers, here.layers):
        x, y = a.activations, b.activations
        assert (x.images, x.elements_per_map) == (y.images, y.elements_per_map)
        for name in ("zeros", "silent", "maximum", "minimum"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=name)
        for name in ("total", "abs_total", "squares", "image_means_squared"):
            np.testing.assert_allclose(getattr(x, name), getattr(y, name), rtol=1e-12, atol=0, err_msg=name)
    a, b = on_ray.to_dict(), here.to_dict()
    assert a["images"].pop("provider") == "ray"
    b["images"].pop("provider")
    # Verdicts, evidence, verification: the JSON is the single-process audit's, its floats to the sums'
    # summation order (a retried batch arrives later, so it is merged in another order).
    assert_same_json(a, b, "audit")


def assert_same_json(a, b, where):
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), where
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same_json(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_json(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_ray_audit_equals_the_single_process_audit(cluster, dataset, model_path):
    here = audit(model_path, dataset, **KWARGS)
    on_ray = audit(model_path, dataset, ray=cluster.address, **KWARGS)
    assert_same_statistics(on_ray, here)
    assert any(layer.dead_channels for layer in here.layers)  # the verdicts compared are not all empty


class _DiesOnce(distributed._AuditActor):
    """Kills its own process in the middle of the first batch it is given (once per marker file)."""

    marker = None  # set by the test; the class travels to the workers by value, with it

    def __call__(self, rows):
        marker = self.marker
        if marker and not os.path.exists(marker):
            with open(marker, "w") as handle:
                handle.write(str(os.getpid()))
            os._exit(1)
        return super().__call__(rows)


def test_an_actor_killed_mid_batch_still_counts_every_image_once(cluster, dataset, model_path, tmp_path,
                                                                  monkeypatch):
    here = audit(model_path, dataset, **KWARGS)
    marker = tmp_path / "killed"
    monkeypatch.setattr(_DiesOnce, "marker", str(marker))
    monkeypatch.setattr(distributed, "_AuditActor", _DiesOnce)
    on_ray = audit(model_path, dataset, ray=cluster.address, **KWARGS)
    assert marker.exists()  # an actor did die
    assert_same_statistics(on_ray, here)


class _LosesOne(distributed._AuditActor):
    """Returns nothing for one batch, as a lost result would."""

    lost = None  # the batch key to drop, set by the test

    def __call__(self, rows):
        kept = [i for i, key in enumerate(rows["key"]) if str(key) != self.lost]
        return super().__call__({name: np.asarray(values)[kept] for name, values in rows.items()})


def test_a_lost_batch_fails_loudly(cluster, dataset, model_path, monkeypatch):
    monkeypatch.setattr(_LosesOne, "lost", distributed.plan(dataset, KWARGS["batch"])[1][0])
    monkeypatch.setattr(distributed, "_AuditActor", _LosesOne)
    with pytest.raises(InspectorError, match=r"1 of \d+ batches were never counted"):
        audit(model_path, dataset, ray=cluster.address, hold_out=False, **KWARGS)


def test_an_image_a_worker_cannot_read_is_skipped_with_one_line(cluster, dataset, model_path, tmp_path, capfd):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    on_ray = audit(model_path, [*dataset[:12], str(broken)], ray=cluster.address, **{**KWARGS, "quiet": True})
    assert on_ray.images + on_ray.verification.images == 12
    assert [item["path"] for item in on_ray.skipped] == [str(broken)]
    assert "skipped " + str(broken) in capfd.readouterr().err


def test_without_ray_flag_ray_is_never_imported(dataset, model_path):
    import subprocess

    code = ("import sys; from inspector.cli import main; "
            f"code = main(['audit', {model_path!r}, {dataset[0]!r}, '--preprocess', 'tf', '--device', 'cpu', '-q']); "
            "assert code == 0, code; assert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules), 'ray'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-2000:]


def test_relative_paths_reach_the_workers(cluster, dataset, model_path, monkeypatch):
    folder = os.path.dirname(dataset[0])
    monkeypatch.chdir(folder)
    relative = [os.path.basename(path) for path in dataset[:12]]
    on_ray = audit(os.path.relpath(model_path), relative, ray=cluster.address, **KWARGS)
    assert_same_statistics(on_ray, audit(model_path, dataset[:12], **KWARGS))


def test_a_parquet_dataset_on_ray_equals_the_folder_audit(cluster, dataset, model_path, tmp_path, monkeypatch):
    import pyarrow as pa  # Ray Data's own dependency
    import pyarrow.parquet as pq

    images = [open(path, "rb").read() for path in dataset]
    keys = [os.path.basename(path) for path in dataset]
    pq.write_table(pa.table({"image": pa.array(images, pa.binary()), "key": keys}), str(tmp_path / "set.parquet"),
                   row_group_size=10)
    monkeypatch.chdir(tmp_path)  # a relative path: the workers get it absolute
    on_ray = audit(model_path, ["set.parquet"], ray=cluster.address, **KWARGS)
    assert_same_statistics(on_ray, audit(model_path, dataset, **KWARGS))


class _SaysItsThreads(distributed._AuditActor):
    """Writes its session's intra-op thread count to ``folder`` (one file per actor process)."""

    folder = None

    def __call__(self, rows):
        threads = self.session.session.get_session_options().intra_op_num_threads
        with open(os.path.join(self.folder, str(os.getpid())), "w") as handle:
            handle.write(str(threads))
        return super().__call__(rows)


def test_each_actor_runs_its_share_of_threads(cluster, dataset, model_path, tmp_path, monkeypatch):
    monkeypatch.setattr(_SaysItsThreads, "folder", str(tmp_path))
    monkeypatch.setattr(distributed, "_AuditActor", _SaysItsThreads)
    for threads, actors in ((1, 2), (2, 1)):  # the cluster's 2 CPUs: two actors of 1 thread, or one of 2
        for name in os.listdir(tmp_path):
            os.remove(tmp_path / name)
        on_ray = audit(model_path, dataset, ray=cluster.address, ray_threads=threads, **KWARGS)
        said = [int((tmp_path / name).read_text()) for name in os.listdir(tmp_path)]
        assert set(said) == {threads} and 1 <= len(said) <= actors, (threads, said)
        assert on_ray.images == audit(model_path, dataset, **KWARGS).images


class _StallsOffHead(distributed._AuditActor):
    """On any node but the head, stalls in its first batch (after saying where) until that node is removed."""

    marker = None
    head = None

    def __call__(self, rows):
        node = ray.get_runtime_context().get_node_id()
        if self.marker and node != self.head and not os.path.exists(self.marker):
            with open(self.marker, "w") as handle:
                handle.write(node)
            import time

            time.sleep(120)  # the test removes this node meanwhile
        return super().__call__(rows)


@pytest.mark.slow  # 10 to 16 s on 2 shared cores (load 10 to 20), up to minutes: Ray takes its time to declare a node dead
def test_a_node_removed_mid_run_still_counts_every_image_once(cluster, dataset, model_path, tmp_path, monkeypatch):
    import threading
    import time

    here = audit(model_path, dataset, **KWARGS)
    extra = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    marker = tmp_path / "stalled"
    monkeypatch.setattr(_StallsOffHead, "marker", str(marker))
    monkeypatch.setattr(_StallsOffHead, "head", cluster.head_node.node_id)
    monkeypatch.setattr(distributed, "_AuditActor", _StallsOffHead)
    outcome = {}

    def run():
        try:
            outcome["result"] = audit(model_path, dataset, ray=cluster.address, **KWARGS)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    # The actors are spread over the nodes (SPREAD), so one starts on a node that is not the head; on a
    # loaded machine its start can take minutes (Ray Data's no-progress timeout bounds the wait).
    while not marker.exists() and worker.is_alive():
        time.sleep(0.2)
    if not marker.exists():
        worker.join()
        pytest.skip("the actors off the head node got no batch before the others had run them all")
    stalled_on = marker.read_text()
    node = next(n for n in cluster.list_all_nodes() if n.node_id == stalled_on)
    cluster.remove_node(node)
    worker.join(timeout=300)
    assert not worker.is_alive() and "error" not in outcome, outcome.get("error")
    assert_same_statistics(outcome["result"], here)
    if node is not extra:
        cluster.remove_node(extra)
