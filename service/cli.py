"""`squad-qa serve` (also `python -m service`): its flags are ServiceSettings' fields."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence

from service.app import create_app
from service.settings import add_flags, from_args
from squad_qa.model.model_dir import CheckpointError, check_qa_checkpoint, resolve_model_dir


def build_arg_parser() -> argparse.ArgumentParser:
    return add_flags(argparse.ArgumentParser(prog="squad-qa serve", description="Serve a fine-tuned QA checkpoint over HTTP."))


def serve_main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    settings = from_args(build_arg_parser().parse_args(argv))
    try:  # fail before binding a port, with the how-to-train message; the app loads this folder as checked
        folder = check_qa_checkpoint(resolve_model_dir(settings.model_dir))
    except CheckpointError as e:
        print(f"squad-qa serve: {e.with_hint()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    application = create_app(folder, **{k: v for k, v in dataclasses.asdict(settings).items() if k != "model_dir"})
    # timeout_graceful_shutdown: on SIGTERM uvicorn stops accepting and waits for open connections;
    # a client holding a half-sent body would hold the exit for as long as it likes without it.
    uvicorn.run(application, host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=settings.shutdown_grace_s)
    return 0
