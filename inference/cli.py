"""``tapwatch worker``: parse options, build :class:`WorkerSettings`, call :func:`service.run`.

Options given on the command line win over ``TAPWATCH_*`` environment variables; every setting without an
option is read from the environment (see :class:`~tapwatch.inference.settings.WorkerSettings`).
Exit codes: 0 after a stop signal and a drain; 2 for a bad setting or a model that fails its card checks;
1 for an unexpected error (the supervisor restarts the worker).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tapwatch.features.cli import run_guarded
from tapwatch.inference.settings import WorkerSettings, build_settings


def _default(name: str) -> str:
    return f"[default: {WorkerSettings.model_fields[name].default}]"


@click.command("worker")
@click.option("--redis", "redis_url", help="Redis URL, e.g. redis://:PASSWORD@host:6379/0 [default: local].")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), help="ONNX model file (required).")
@click.option("--card", type=click.Path(dir_okay=False, path_type=Path),
              help="Model card JSON [default: NAME.card.json or NAME.json beside the model].")  # fmt: skip
@click.option(
    "--profile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Site profile from tapwatch learn [NAME.profile.json beside the model].",
)
@click.option("--batch-size", type=int, help=f"Entries per read and per model run {_default('batch_size')}.")
@click.option("--block-ms", type=int, help=f"Longest wait for new entries per read, ms {_default('block_ms')}.")
@click.option("--threads", type=int, help=f"ONNX Runtime intra-op threads {_default('threads')}.")
@click.option(
    "--claim-idle-ms", type=int, help=f"Claim entries pending longer than this, ms {_default('claim_idle_ms')}."
)
@click.option(
    "--reload-poll", "reload_poll_s", type=float, help=f"Model file poll seconds, 0 off {_default('reload_poll_s')}."
)
@click.option("--consumer", "worker_consumer", help="Consumer name in the group [default: HOST-PID].")
@click.option("--metrics-port", type=int, help=f"Port of /metrics /livez /readyz (0: any) {_default('metrics_port')}.")
@click.option("--metrics-host", help=f"Address of /metrics /livez /readyz {_default('metrics_host')}.")
def worker_command(**kw: Any) -> None:
    """Classify windows from the windows stream with an ONNX model and write verdicts.

    Example: tapwatch worker --redis redis://localhost:6379/0 --model models/hybrid-lab.onnx
    """

    def body() -> int:
        from prometheus_client import REGISTRY

        from tapwatch.inference.service import run

        return run(build_settings({k: v for k, v in kw.items() if v is not None}), REGISTRY)

    run_guarded(body)
