"""Training and evaluation. ``metrics`` and ``evaluate`` need only NumPy/ONNX Runtime; the training
loop (``loop``, ``augment``, ``export``) imports PyTorch, which comes with the ``train`` extra."""
