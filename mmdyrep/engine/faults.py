"""Test-only fault injection: kill a run at a named point, to prove that resume loses nothing.

``$MMDYREP_FAULT`` names the point (``iter@6``: after training iteration 6; ``epoch@2``: after
epoch 2's DyRep update, before its checkpoint; ``history@2``: while update 2 writes
``dyrep_history.json``, between the temporary file and its replace); ``$MMDYREP_FAULT_RANK`` the
rank (default 0). Unset, :func:`fault_point` does nothing.
"""
import os
import signal
from typing import Optional

from mmengine import dist


def fault_point(name: str, step: Optional[int] = None) -> None:
    """Test-only: SIGKILL this process when ``$MMDYREP_FAULT`` names this point (``name`` or
    ``name@step``) on this rank (``$MMDYREP_FAULT_RANK``, default 0). Nothing otherwise."""
    want = os.environ.get('MMDYREP_FAULT')
    if not want or dist.get_rank() != int(os.environ.get('MMDYREP_FAULT_RANK', 0)):
        return
    if want == name or (step is not None and want == f'{name}@{step}'):
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ['fault_point']
