"""(question, context) -> answers, for the service and prediction files.

    items.py    QAItem in, Answer out (and a request's prepared windows)
    reader.py   QAReader: windows, the model, spans
    predict.py  prediction files for a data file (`squad-qa predict`, scripts/predict.py)
    doctor.py   is this install the tested one (`squad-qa doctor`)
"""

from squad_qa.inference.reader import Answer, QAItem, QAReader

__all__ = ["Answer", "QAItem", "QAReader"]
