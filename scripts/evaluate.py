"""Official SQuAD v1.1 / v2.0 evaluation: python scripts/evaluate.py dev.json predictions.json [--na-prob-file ...]."""

from squad_qa.metrics import main

if __name__ == "__main__":
    raise SystemExit(main())
