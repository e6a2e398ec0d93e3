"""Windows -> batches -> the model -> logits.

    model_dir.py    which model folder, is it a fine-tuned QA checkpoint and intact (ModelFolder), loading
    batching.py     length-grouped training batches, collate, predict_logits (padded or packed)
    packing.py      padding-free packed rows, attention window by window
    compute.py      compute dtype, int8, torch.compile, packing switches
    onnx_backend.py the model as an ONNX Runtime graph (float32, int8), exported once beside it
    cpu.py          the CPU's kind, its physical cores, the threads policy, what serves by default
    ensemble.py     several models' raw logits averaged per window
    logits_file.py  saved logits of every window (--save_logits, a --teacher file)
"""
