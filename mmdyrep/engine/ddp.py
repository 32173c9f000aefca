"""DDP that also runs on CPU (gloo), through mmengine's ``model_wrapper_cfg``.

mmengine's ``Runner.wrap_model`` always passes ``device_ids=[LOCAL_RANK]`` to a
DistributedDataParallel subclass, which is invalid for a CPU module. This wrapper drops
``device_ids``/``output_device`` when the module lives on the CPU and is otherwise
mmengine's ``MMDistributedDataParallel``::

    model_wrapper_cfg = dict(type='CPUCompatibleDDP', broadcast_buffers=False)
"""
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CPUCompatibleDDP(MMDistributedDataParallel):

    def __init__(self, module, detect_anomalous_params: bool = False, **kwargs):
        first = next(module.parameters(), None)
        if first is not None and first.device.type == 'cpu':
            kwargs.pop('device_ids', None)
            kwargs.pop('output_device', None)
        super().__init__(module, detect_anomalous_params=detect_anomalous_params, **kwargs)
