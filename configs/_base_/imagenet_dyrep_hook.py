# DyRep on ImageNet (Sec. 5.1): update every t = 5 epochs, the last update at epoch 100 of 120.
custom_hooks = [
    dict(type='DyRepHook', interval=5, begin=0, end=100, metric='taylor', topk=1, gamma_init=0.01,
         num_calib_batches=20, dep=True, dep_threshold=0.02),
    dict(type='RandomStateHook'),  # exact --resume: the random streams travel in the checkpoints
]
