"""Train/test splits of the lab corpus that never share an episode, and, when asked, never a seed or a profile.

Flows of one episode are alike (one tool, one attacker, one victim, one stretch of time); a split that puts some
in training and the rest in testing measures memory, not detection. Every row of the corpus dataset
(:mod:`lab.corpus`) carries its ``unit`` (scenario, seed, link profile) and its ``episode_id``, so:

* :func:`split_by_run` sends whole runs to the test side by seed, link profile or scenario: the test traffic
  comes from runs the model never saw (other seeds, another kind of path);
* :func:`split_by_episode` sends whole episodes (an attack, or one client's benign traffic in one run) to the test
  side, drawn per family with a seed, so each family is on both sides when it has two episodes or more.

Both return a Series of ``"train"``/``"test"`` aligned with the frame; :func:`check_disjoint` says which episodes,
seeds or profiles a split shares between its sides (none, for the splits here).

Example
-------
>>> import pandas as pd
>>> frame = pd.DataFrame({"unit": ["o-wan-s1"] * 3 + ["o-lossy-s2"] * 2, "seed": [1, 1, 1, 2, 2],
...                       "link_profile": ["wan"] * 3 + ["lossy"] * 2, "scenario": ["o"] * 5,
...                       "episode_id": ["e001", "e001", "b-c1", "e001", "b-c1"],
...                       "family": ["scan", "scan", "benign", "scan", "benign"]})
>>> split_by_run(frame, test_profiles=("lossy",)).tolist()
['train', 'train', 'train', 'test', 'test']
>>> check_disjoint(frame, split_by_run(frame, test_profiles=("lossy",)), ("seed", "link_profile"))
{'episode': 0, 'seed': 0, 'link_profile': 0}
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from lab.topo_plan import LabError
from tapwatch.models.training.data_lab import draw_episodes

TRAIN, TEST = "train", "test"


def split_by_run(frame: pd.DataFrame, *, test_seeds: Sequence[int] = (), test_profiles: Sequence[str] = (),
                 test_scenarios: Sequence[str] = ()) -> pd.Series:  # fmt: skip
    """Rows of runs with a test seed, a test link profile or a test scenario go to the test side."""
    if not (test_seeds or test_profiles or test_scenarios):
        raise LabError("a split by run needs test seeds, test link profiles or test scenarios")
    test = (frame["seed"].isin(list(test_seeds)) | frame["link_profile"].isin(list(test_profiles))
            | frame["scenario"].isin(list(test_scenarios)))  # fmt: skip
    return test.map({True: TEST, False: TRAIN})


def episode_keys(frame: pd.DataFrame) -> pd.Series:
    """Each row's episode across the corpus: ``unit/episode_id`` (episode ids repeat from run to run)."""
    return frame["unit"].astype(str) + "/" + frame["episode_id"].astype(str)


def split_by_episode(frame: pd.DataFrame, test_share: float = 0.3, seed: int = 0) -> pd.Series:
    """Whole episodes to the test side: per family, ``test_share`` of its episodes (at least one when it has two)."""
    if not 0 < test_share < 1:
        raise LabError(f"test_share must be between 0 and 1, got {test_share}")
    keys = episode_keys(frame)
    test = draw_episodes(keys, frame["family"], test_share, seed)
    return keys.isin(test).map({True: TEST, False: TRAIN})


def check_disjoint(frame: pd.DataFrame, sides: pd.Series, columns: Sequence[str] = ()) -> dict[str, int]:
    """How many episodes, and values of ``columns``, appear on both sides of a split."""
    keys = episode_keys(frame)
    out = {"episode": len(set(keys[sides == TRAIN]) & set(keys[sides == TEST]))}
    for col in columns:
        out[col] = len(set(frame.loc[sides == TRAIN, col]) & set(frame.loc[sides == TEST, col]))
    return out
