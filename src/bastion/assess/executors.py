"""Where an assessment's jobs (``bastion.assess.jobs``) run: here, on a local process pool, or on a Ray cluster.

Each executor takes the model and the assessed data once (a pool's initializer, Ray's object store), runs the jobs
wherever it has room, and hands their outputs back in job order; the runner merges them. The jobs derive all their
randomness from the policy's seed, so every executor gives the same figures as a one-process run.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from bastion._progress import Progress
from bastion.assess.families.base import AssessData
from bastion.assess.jobs import Job, run_job
from bastion.errors import BastionError, ConfigError
from bastion.models.base import Classifier

log = logging.getLogger(__name__)


class Executor(Protocol):
    """Runs jobs; ``shards`` says how many parts a splittable entry is cut into per budget."""

    shards: int
    name: str

    def run(
        self, model: Classifier, data: AssessData, seed: int, jobs: Sequence[Job], progress: Progress
    ) -> list[Any]: ...


def _portable(model: Classifier) -> None:
    """A clear error, before any work, for a model that cannot be sent to another process (the pool and Ray send
    it pickled; Bastion itself never unpickles anything)."""
    if getattr(model, "throttled", None) is not None or type(model).__name__ == "HttpClassifier":
        raise ConfigError(
            "a live endpoint (--url) cannot be assessed by several workers: they would share its rate limit and "
            "its degradations; run it without --workers/--ray"
        )
    try:
        pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # any object in the model graph may refuse
        raise ConfigError(
            f"this model cannot be sent to other processes ({type(e).__name__}: {e}); run without --workers/--ray, "
            "or load it with the torch runtime"
        ) from None


class InProcess:
    """The jobs one after another in this process (the reference a distributed run is compared with)."""

    name = "in-process"

    def __init__(self, shards: int = 1) -> None:
        self.shards = shards

    def run(self, model: Classifier, data: AssessData, seed: int, jobs: Sequence[Job], progress: Progress) -> list[Any]:
        progress.task("assessment jobs", len(jobs))
        out = []
        for job in jobs:
            out.append(run_job(model, data, seed, job))
            progress.advance()
        return out


_WORKER: dict[str, Any] = {}


def _init_worker(model: Classifier, data: AssessData, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER["model"], _WORKER["data"] = model, data


def _pool_job(seed: int, job: Job) -> tuple[int, Any, float]:
    t0 = time.perf_counter()
    out = run_job(_WORKER["model"], _WORKER["data"], seed, job)
    return job.index, out, time.perf_counter() - t0


class ProcessPool:
    """``workers`` local processes (spawned, so no forked torch state), ``threads`` torch threads each."""

    name = "process pool"

    def __init__(self, workers: int, *, threads: int = 1, shards: int | None = None) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        if threads < 1:
            raise ConfigError(f"threads per worker must be >= 1, got {threads}")
        self.workers, self.threads = workers, threads
        self.shards = shards or workers

    def run(self, model: Classifier, data: AssessData, seed: int, jobs: Sequence[Job], progress: Progress) -> list[Any]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        _portable(model)
        progress.task(f"assessment jobs on {self.workers} processes", len(jobs))
        out: list[Any] = [None] * len(jobs)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            self.workers, mp_context=ctx, initializer=_init_worker, initargs=(model, data, self.threads)
        ) as pool:
            futures = [pool.submit(_pool_job, seed, job) for job in jobs]
            try:
                for f in as_completed(futures):
                    index, result, _ = f.result()
                    out[index] = result
                    progress.advance()
            except BrokenProcessPool:
                done = sum(r is not None for r in out)
                raise BastionError(
                    f"a worker process died (killed, or out of memory) after {done} of {len(jobs)} assessment jobs; "
                    "nothing is reported from an incomplete run: rerun with fewer --workers, or without them"
                ) from None
        return out


def _ray_job(model: Classifier, data: AssessData, seed: int, job: Job, threads: int) -> Any:
    torch.set_num_threads(threads)
    return run_job(model, data, seed, job)


class RayCluster:
    """The jobs as Ray tasks (one CPU each) on the cluster at ``address`` (``ray start --head`` prints it), or
    on a Ray instance started here and stopped afterwards when ``address`` is ``local``.

    The cluster's workers must be able to import Bastion and torch (the same environment, or a ``runtime_env``)."""

    name = "Ray"

    def __init__(self, address: str, *, workers: int | None = None, threads: int = 1, shards: int | None = None):
        if not address.strip():
            raise ConfigError("--ray needs the cluster address (host:port, 'auto', or 'local')")
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # Ray's core logs warnings to stderr otherwise
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("--ray needs Ray: pip install 'bastion[ray]'") from None
        self.address, self.threads = address.strip(), threads
        if self.address not in ("local", "auto"):
            _reachable(self.address)  # at once: ray.init retries an unreachable address for minutes
        self.workers = workers
        self.shards = shards or workers or 4
        self.cluster_cpus: float = 0.0

    def run(self, model: Classifier, data: AssessData, seed: int, jobs: Sequence[Job], progress: Progress) -> list[Any]:
        import ray

        _portable(model)
        started_here = not ray.is_initialized()
        if started_here:
            kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
            try:
                if self.address == "local":
                    ray.init(num_cpus=self.workers or os.cpu_count() or 1, include_dashboard=False, **kwargs)
                else:
                    ray.init(address=self.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConfigError(
                    f"cannot join the Ray cluster at {self.address!r}: {str(e).splitlines()[0]} (a cluster with token "
                    "authentication, the default since Ray 2.59, needs RAY_AUTH_MODE=token and its token in "
                    "RAY_AUTH_TOKEN or ~/.ray/auth_token)"
                ) from None
        try:
            self.cluster_cpus = float(ray.cluster_resources().get("CPU", 0.0))
            task = ray.remote(num_cpus=1, max_retries=2)(_ray_job)
            model_ref, data_ref = ray.put(model), ray.put(data)
            progress.task(f"assessment jobs on Ray ({self.cluster_cpus:g} CPUs)", len(jobs))
            refs = [task.remote(model_ref, data_ref, seed, job, self.threads) for job in jobs]
            index = {ref: i for i, ref in enumerate(refs)}
            out: list[Any] = [None] * len(jobs)
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    out[index[ref]] = ray.get(ref)
                    progress.advance()
            return out
        finally:
            if started_here:
                ray.shutdown()


def _reachable(address: str, timeout: float = 3.0) -> None:
    """A clear error at once for a cluster address nothing listens on."""
    import socket

    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--ray {address!r} is not host:port (or 'auto', 'local'); ray start --head prints it")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} ({e.strerror or e}); start one with ray start --head, or "
            "use --ray local"
        ) from None


def executor_for(workers: int | None, ray_address: str | None, *, threads: int = 1) -> Executor | None:
    """What the CLI's ``--workers N`` and ``--ray ADDRESS`` ask for (None: the plain one-process run)."""
    if ray_address is not None:
        return RayCluster(ray_address, workers=workers, threads=threads)
    if workers is not None:
        return ProcessPool(workers, threads=threads)
    return None


__all__ = ["Executor", "InProcess", "ProcessPool", "RayCluster", "executor_for"]
