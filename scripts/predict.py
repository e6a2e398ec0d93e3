"""Write SQuAD prediction files with a fine-tuned checkpoint (see squad_qa/inference.py)."""

from squad_qa.inference import main

raise SystemExit(main())
