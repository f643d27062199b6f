"""The HTTP service: `cosface serve` runs `create_app(Service(embedder, gallery))` under uvicorn.

    from cosface import Embedder
    from cosface.gallery import open_gallery
    from cosface.serve import Service, create_app
    emb = Embedder("model.onnx")
    app = create_app(Service(emb, open_gallery("people.sqlite", emb)))   # any ASGI server runs it
"""
from cosface.serve.app import MAX_UPLOAD_BYTES, PUBLIC_PATHS, ApiError, ServeSettings, Service, create_app
from cosface.serve.batcher import Batcher

__all__ = ["MAX_UPLOAD_BYTES", "PUBLIC_PATHS", "ApiError", "Batcher", "ServeSettings", "Service", "create_app"]
