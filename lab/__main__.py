"""``python -m lab SCENARIO``: run one lab scenario into a directory (root; from the repository).

Example: ``sudo .venv/bin/python -m lab ci-short --seed 1 --profile wan --out runs/ci-short`` builds the lab, runs
the scenario's benign clients and attacks, captures at the tap and writes capture.pcap, episodes.csv, flows.csv
and run.json (see :mod:`lab.run`); the lab is torn down at the end, on an error and on Ctrl-C.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from lab.delayline import Profile
from lab.scenarios import SCENARIOS, scenario
from tapwatch.features.errors import TapwatchError


@click.command()
@click.argument("name", type=click.Choice(sorted(SCENARIOS)))
@click.option("--seed", type=int, default=1, show_default=True, help="Seeds the schedule, the delay lines and tools.")
@click.option("--profile", type=click.Choice([p.value for p in Profile]), default="lan", show_default=True,
              help="Link profile of every client's and attacker's path.")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="The run's directory (created; refused when not empty).")  # fmt: skip
@click.option("--duration", type=click.FloatRange(10, 86400), default=None, help="Seconds [default: the scenario's].")
@click.option("--prefix", default="twlab", show_default=True, help="Prefix of the lab's namespace names.")
@click.option("--live", is_flag=True, help="Also run `tapwatch run` on the tap, out of the box, into OUT/live.")
@click.option("-v", "--verbose", count=True, help="More log output.")
def main(name: str, seed: int, profile: str, out: Path, duration: float | None, prefix: str, live: bool,
         verbose: int) -> None:  # fmt: skip
    """Run the lab scenario NAME (needs root). Example: sudo python -m lab ci-short --out runs/ci-short"""
    from lab.run import RunConfig, run_scenario  # imports every tool module; --help stays fast without them

    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    cfg = RunConfig(scenario(name), seed, Profile(profile), out, prefix, duration_s=duration, live=live)
    try:
        result = run_scenario(cfg)
    except TapwatchError as err:
        raise click.ClickException(str(err)) from err
    s = result.summary
    rtt = s["handshake_rtt"]["median_ms"]
    click.echo(f"{cfg.unit}: {s['flows_total']} flows {s['flows']}, {s['episodes']} episodes, "
               f"handshake RTT median {rtt} ms (profile {s['profile_rtt_ms']} ms) -> {out}")  # fmt: skip


if __name__ == "__main__":
    main()
