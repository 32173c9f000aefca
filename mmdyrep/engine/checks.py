"""What DyRepHook refuses before anything trains, with errors that name what is wrong: a window of
updates that is malformed or does not fit the run, and runners it cannot evolve (EMAHook,
``cfg.compile``, several optimizers)."""
from typing import Optional

from mmengine.hooks import EMAHook

from mmdyrep.core import DyRepError


def check_window(interval: int, begin: int, end: Optional[int]) -> None:
    """``interval`` a positive int, ``0 <= begin < end`` (``end=None``: the end of training)."""
    if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
        raise DyRepError(f'DyRepHook: interval must be a positive int (epochs or iterations), got {interval!r}')
    if not isinstance(begin, int) or begin < 0:
        raise DyRepError(f'DyRepHook: begin must be an int >= 0, got {begin!r}')
    if end is not None and (not isinstance(end, int) or end <= begin):
        raise DyRepError(f'DyRepHook: end must be None or an int > begin ({begin}), got {end!r}')


def check_runner(runner, interval: int, begin: int, end: Optional[int], limit: int, unit: str) -> None:
    """The window fits a run of ``limit`` ``unit`` (epochs or iterations) with at least one update, and
    ``runner`` is one the hook can evolve."""
    if begin >= limit or (end is not None and end > limit):
        raise DyRepError(f'DyRepHook: the window begin={begin}, end={end} lies outside the run ({limit} {unit})')
    if begin + interval > (end or limit):
        raise DyRepError(f'DyRepHook: no update fits: begin={begin} + interval={interval} is past '
                         f'{"end=" + str(end) if end else "the end of the run"} ({limit} {unit})')
    if any(isinstance(hook, EMAHook) for hook in runner.hooks):
        raise DyRepError('DyRepHook cannot run with EMAHook: the averaged model would keep the old '
                         'structure when parameters are added or cut. Remove EMAHook from custom_hooks.')
    if runner.cfg.get('compile'):
        raise DyRepError('DyRepHook cannot run with cfg.compile: every structure update changes the model the '
                         'compiled train_step traced (a re-wrapped DDP drops it; dynamo re-traces up to 8 times, then '
                         "runs eagerly), and mmengine's compiled train_step measured slower than eager "
                         '(docs/benchmarks.md). Remove `compile` from the config.')
    from mmengine.optim import OptimWrapper
    if not isinstance(runner.optim_wrapper, OptimWrapper):
        raise DyRepError(f'DyRepHook supports a single OptimWrapper, got {type(runner.optim_wrapper).__name__}')


__all__ = ['check_runner', 'check_window']
