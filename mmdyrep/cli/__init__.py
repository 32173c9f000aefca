"""What the command-line tools under ``tools/`` share: the layer above :mod:`mmdyrep.analysis`.

* :mod:`.runner_setup`: config loading for the three toolboxes, CPU adaptation, distributed set-up,
  the Runner, and the one-line error answer (``error: ...``, ``--debug`` for the traceback);
* :mod:`.preflight`: the checks of the user's input that run before a Runner is built.

Importing this package hides setuptools' ``pkg_resources`` deprecation notice, which mmengine, mmcv
and the toolboxes trigger at import: a notice for their maintainers, not for users of the tools. So
the tools import it before anything imports mmengine.
"""
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
