"""(question, context) -> answers, for the service and prediction files.

    reader.py   QAReader: windows, the model, spans; Answer, QAItem
    predict.py  prediction files for a data file (`squad-qa predict`, scripts/predict.py)
    doctor.py   is this install the tested one (`squad-qa doctor`)
"""

from squad_qa.inference.reader import Answer, QAItem, QAReader

__all__ = ["Answer", "QAItem", "QAReader"]
