"""The search space of ``hparams_search=``: Hydra's sweep syntax turned into Optuna 4 distributions.

``hydra.sweeper.params`` and the command line use Hydra's override grammar:

- ``choice(16, 25, 32)``: categorical;
- ``interval(0.0, 0.5)``: uniform float (Hydra's intervals are floats; ints come from ``range``);
  ``tag(log, interval(1e-5, 1e-3))``: log-uniform;
- ``range(1, 5)`` / ``range(0.1, 0.5, 0.1)``: a stepped int / float distribution over the values Hydra's own
  ``range`` gives (the stop is excluded, as in Hydra's basic sweeper); ``shuffle(range(...))``: categorical;
- anything else (``model=fe_vgg``): a fixed value, given to every trial.

Only Optuna's current distribution classes are built (``FloatDistribution``, ``IntDistribution``,
``CategoricalDistribution``), and values are suggested through the public ``Trial.suggest_*`` API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from wav2emo.errors import ConfigError

if TYPE_CHECKING:
    import optuna
    from hydra.core.override_parser.types import Override


def _choices(override: Override) -> list[Any]:
    from hydra.core.override_parser.types import Transformer

    out = list(override.sweep_iterator(transformer=Transformer.encode))
    bad = [x for x in out if not isinstance(x, (str, int, float, bool, type(None)))]
    if bad:
        raise ConfigError(f"{override.input_line}: a searched choice takes str, int, float, bool or null values, "
                          f"not {bad}")
    return out


def distribution(override: Override) -> Any:
    """The Optuna distribution of a sweep override, or the override's value as a string when it is fixed."""
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep():
        return CategoricalDistribution(_choices(override))
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        if value.shuffle:
            return CategoricalDistribution(_choices(override))
        values = _choices(override)
        if not values:
            raise ConfigError(f"{override.input_line}: the range holds no value (its stop is excluded)")
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(int(values[0]), int(values[-1]), step=int(value.step))
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step))
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        return FloatDistribution(float(value.start), float(value.end), log="log" in value.tags)
    raise ConfigError(f"{override.input_line}: expected choice(...), range(...), interval(...) or a fixed value")


def parse_space(arguments: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """``key=sweep`` overrides -> (searched key -> distribution, fixed key -> value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import BaseDistribution

    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        value = distribution(override)
        if isinstance(value, BaseDistribution):
            space[override.get_key_element()] = value
        else:
            fixed[override.get_key_element()] = value
    return space, fixed


def suggest(trial: optuna.Trial, name: str, dist: Any) -> Any:
    """Draw ``name`` from ``dist`` through Optuna's public API."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise ConfigError(f"{name}: unsupported distribution {dist!r}")


def grid_choices(name: str, dist: Any) -> list[Any]:
    """Every value of a discrete distribution, for ``hydra/sweeper/sampler=grid``."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, (IntDistribution, FloatDistribution)) and dist.step is not None and not dist.log:
        n = int(round((dist.high - dist.low) / dist.step)) + 1
        return [dist.low + i * dist.step for i in range(n)]
    raise ConfigError(f"{name}: the grid sampler needs choice(...) or range(...), not a continuous {dist!r}")
