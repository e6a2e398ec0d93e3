"""HTTP service for squad-qa: FastAPI app (service.app), micro-batcher (service.batcher), web page (service/static)."""
