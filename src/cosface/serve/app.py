"""The HTTP API (FastAPI): verify, embed, detect, identify, subjects CRUD, health, and the web page.

It owns no model logic: photos go through cosface.gallery.photos (decode with a pixel limit, aligned
crops), embeddings through the Embedder (one model, batched across concurrent requests by a Batcher),
search and subjects through cosface.gallery.Gallery. Images come as multipart uploads or as base64
strings in a JSON body. Every error is JSON {"error": {"code", "message"}} with a 4xx status (a 500
says only "internal error"; the traceback goes to the server log).
"""

import asyncio
import base64
import binascii
import hmac
import json
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from cosface.errors import CosfaceError
from cosface.evaluation.metrics import check_cosine_threshold
from cosface.gallery.photos import (MAX_PIXELS, NoFaceError, NotAnImageError, TooManyPixelsError, decode_photo,
                                    face_crops, thumbnail_jpeg)
from cosface.gallery.store import PAGE_SIZE, GalleryBusyError, SubjectExistsError
from cosface.optional import require
from cosface.serve.batcher import Batcher

log = logging.getLogger("cosface.serve")

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PAGE = 1000                        # subjects in one GET /v1/subjects response
PUBLIC_PATHS = ("/healthz", "/", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/favicon.ico")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


@dataclass
class ServeSettings:
    api_key: str | None = None
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_pixels: int = MAX_PIXELS
    max_images: int = 32               # images in one request
    batch_wait_s: float = 0.002


class Service:
    """The state one app holds: the model (loaded once), its batcher, the gallery."""

    def __init__(self, embedder, gallery=None, settings: ServeSettings | None = None):
        from cosface.gallery.store import ModelIdentity

        self.embedder, self.gallery = embedder, gallery
        self.settings = settings or ServeSettings()
        self.identity = gallery.model if gallery is not None else ModelIdentity.of(embedder)
        self.threshold, self.threshold_source = embedder.default_threshold()
        self.size = embedder.preprocessing.size
        self.batcher = Batcher(embedder.embed, max_wait_s=self.settings.batch_wait_s)

    def model_doc(self) -> dict:
        m = self.identity
        return {"backbone": m.backbone, "dim": m.dim, "sha256": m.model_sha256, "file": self.embedder.path.name}

    async def crops(self, data: bytes, name: str, keep: str = "largest") -> list:
        from starlette.concurrency import run_in_threadpool

        def work():
            try:
                image = decode_photo(data, name=name, max_pixels=self.settings.max_pixels)
            except TooManyPixelsError as e:
                raise ApiError(413, "too_many_pixels", str(e)) from None
            except NotAnImageError as e:
                raise ApiError(415, "not_an_image", str(e)) from None
            try:
                return face_crops(image, self.embedder, name=name, keep=keep)
            except NoFaceError as e:
                raise ApiError(422, "no_face", str(e)) from None

        return await run_in_threadpool(work)

    async def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.empty((0, self.identity.dim), np.float32)
        return await asyncio.wrap_future(self.batcher.submit(np.stack(crops)))

    def need_gallery(self):
        if self.gallery is None:
            raise ApiError(409, "no_gallery", "this server has no gallery: start it with `cosface serve --db G.sqlite`")
        return self.gallery


# -- request bodies: multipart or JSON with base64 ----------------------------------------------------------
class Inputs:
    def __init__(self, files: dict[str, list[bytes]], fields: dict[str, Any]):
        self.files, self.fields = files, fields

    def images(self, *names: str) -> list[tuple[str, bytes]]:
        return [(n, data) for n in names for data in self.files.get(n, [])]

    def image(self, name: str) -> bytes:
        found = self.files.get(name, [])
        if not found:
            raise ApiError(400, "missing_image", f"the request has no image '{name}' (a multipart file field, or a "
                                                 f"base64 string under \"{name}\" in a JSON body)")
        if len(found) > 1:
            raise ApiError(400, "bad_request", f"give one image '{name}', not {len(found)}")
        return found[0]

    def text(self, name: str, default=None):
        value = self.fields.get(name, default)
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.fields.get(name, default)
        try:
            value = int(raw)
        except (TypeError, ValueError, OverflowError):   # OverflowError: int(Infinity)
            raise ApiError(400, "bad_request", f"'{name}' must be an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise ApiError(400, "bad_request", f"'{name}' must be in {low}..{high}, got {value}")
        return value

    def json_object(self, name: str) -> dict | None:
        raw = self.fields.get(name)
        if raw is None or raw == "":
            return None
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ApiError(400, "bad_request", f"'{name}' is not JSON ({e})") from None
            except RecursionError:
                raise ApiError(400, "bad_request", f"'{name}' is nested too deeply") from None
        if not isinstance(raw, dict):
            raise ApiError(400, "bad_request", f"'{name}' must be a JSON object")
        return raw


def _b64(value, key: str) -> bytes:
    if not isinstance(value, str):
        raise ApiError(400, "bad_request", f"\"{key}\" must be a base64 string")
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", f"\"{key}\" is not valid base64") from None


async def read_inputs(request, image_keys: tuple[str, ...], max_images: int) -> Inputs:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    files: dict[str, list[bytes]] = {}
    fields: dict[str, Any] = {}
    if ctype == "multipart/form-data":
        from starlette.datastructures import UploadFile

        try:
            form = await request.form(max_files=max_images, max_fields=64)
        except Exception as e:   # starlette's parser: malformed or over its part limits
            raise ApiError(400, "bad_request", f"cannot read the multipart body ({e})") from None
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.setdefault(key, []).append(await value.read())
            elif key in image_keys:
                files.setdefault(key, []).append(_b64(value, key))
            else:
                fields[key] = value
    elif ctype == "application/json":
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, "bad_json", f"the JSON body does not parse ({e})") from None
        except RecursionError:   # json's C parser gives up on deep nesting this way
            raise ApiError(400, "bad_json", "the JSON body is nested too deeply") from None
        if not isinstance(body, dict):
            raise ApiError(400, "bad_json", "the JSON body must be an object")
        for key, value in body.items():
            if key in image_keys:
                values = value if isinstance(value, list) else [value]
                files[key] = [_b64(v, key) for v in values]
            else:
                fields[key] = value
    elif ctype:
        raise ApiError(415, "unsupported_media_type", f"send multipart/form-data or application/json, not {ctype}")
    else:
        raise ApiError(400, "missing_image", "the request has no body: send images as multipart/form-data or "
                                             "base64 in application/json")
    if sum(len(v) for v in files.values()) > max_images:
        raise ApiError(413, "too_many_images", f"at most {max_images} images per request")
    return Inputs(files, fields)


def _crop_doc(crop, with_image: bool = True) -> dict:
    doc = {"box": [round(float(v), 2) for v in crop.box], "score": crop.score,
           "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in crop.landmarks]}
    if with_image:
        doc["crop"] = "data:image/jpeg;base64," + base64.b64encode(thumbnail_jpeg(crop.image)).decode()
    return doc


def _subject_doc(s) -> dict:
    doc = {"name": s.name, "faces": s.faces, "metadata": s.metadata}
    if s.face_ids:
        doc["face_ids"] = list(s.face_ids)
    return doc


def _body(fields: dict[str, str], required: tuple[str, ...]) -> dict:
    """OpenAPI request body: the same fields as multipart (files) or JSON (base64 strings)."""
    def schema(multipart: bool) -> dict:
        props: dict[str, dict] = {}
        for name, kind in fields.items():
            if kind == "image":
                props[name] = ({"type": "string", "format": "binary"} if multipart
                               else {"type": "string", "format": "byte", "description": "base64 image"})
            elif kind == "images":
                item = ({"type": "string", "format": "binary"} if multipart
                        else {"type": "string", "format": "byte"})
                props[name] = {"type": "array", "items": item}
            else:
                props[name] = {"type": kind}
        return {"type": "object", "properties": props, "required": list(required)}

    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema(True)},
                                                          "application/json": {"schema": schema(False)}}}}


def create_app(service: Service):
    """The FastAPI app for one Service."""
    require("fastapi", purpose="cosface serve")
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from cosface import __version__

    app = FastAPI(title="cosface", version=__version__,
                  description="Face verification, embedding and 1:N identification with a CosFace model. Images "
                  "are multipart file uploads or base64 strings in a JSON body. With an API key configured, send "
                  "it as `X-API-Key: KEY` or `Authorization: Bearer KEY`.")
    app.state.service = service
    settings = service.settings

    # -- errors: always JSON, never a traceback --------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse(_error_body(exc.code, exc.message), status_code=exc.status)

    @app.exception_handler(CosfaceError)
    async def _cosface_error(request, exc: CosfaceError):
        return JSONResponse(_error_body("bad_request", str(exc)), status_code=400)

    @app.exception_handler(GalleryBusyError)
    async def _busy(request, exc: GalleryBusyError):
        return JSONResponse(_error_body("gallery_busy", str(exc)), status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        codes = {404: "not_found", 405: "method_not_allowed"}
        return JSONResponse(_error_body(codes.get(exc.status_code, "http_error"), str(exc.detail)),
                            status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        loc = tuple(str(p) for p in first.get("loc", ()))
        if loc[:1] == ("query",):
            # A bad query parameter is a malformed request like a bad form field: 400, naming it and its value.
            name = ".".join(loc[1:])
            return JSONResponse(_error_body("bad_request", f"'{name}': {first.get('msg', 'invalid')}, got "
                                            f"{first.get('input')!r}"), status_code=400)
        return JSONResponse(_error_body("bad_request", f"{'.'.join(loc)}: {first.get('msg', 'invalid')}"),
                            status_code=422)

    @app.exception_handler(Exception)
    async def _internal(request, exc):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(_error_body("internal", "internal error (see the server log)"), status_code=500)

    # -- API key and upload size: checked before any handler reads the body -----------------------------
    @app.middleware("http")
    async def _guard(request: Request, call_next):
        # A page of another site can make the visitor's browser post a form here (it needs no CORS), and
        # one served under a DNS name it then points at 127.0.0.1 is even same-origin with this server:
        # without an API key to stop them, either could enrol, read or delete faces. Browsers say which
        # site a request comes from (Sec-Fetch-Site); a server without a key answers only requests
        # addressed to localhost or an IP address, which a rebound name is not.
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return JSONResponse(_error_body("cross_site", f"a request from another site ({site}) is refused: this "
                                            "API serves its own page and non-browser clients"), status_code=403)
        host = request.headers.get("host")
        if settings.api_key is None and host is not None and not _local_or_ip(host):
            return JSONResponse(_error_body("forbidden_host", f"this server has no API key, so it answers only "
                                            f"requests to localhost or an IP address, not to {host!r}; start it "
                                            f"with an API key to serve it under a name"), status_code=403)
        if settings.api_key is not None and request.url.path not in PUBLIC_PATHS:
            given = request.headers.get("x-api-key")
            auth = request.headers.get("authorization", "")
            if given is None and auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if given is None:
                return JSONResponse(_error_body("unauthorized", "this server needs an API key: send X-API-Key: KEY "
                                                "or Authorization: Bearer KEY"), status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
                return JSONResponse(_error_body("unauthorized", "wrong API key"), status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > settings.max_upload_bytes
            except ValueError:
                return JSONResponse(_error_body("bad_request", "Content-Length is not a number"), status_code=400)
            if too_big:
                return JSONResponse(_error_body("too_large", f"the request body is {int(length):,} bytes; the limit "
                                                f"is {settings.max_upload_bytes:,}"), status_code=413)
        elif request.method in ("POST", "PUT", "PATCH"):
            # Chunked upload: read it here, with the limit, so no handler sees more than the limit.
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > settings.max_upload_bytes:
                    return JSONResponse(_error_body("too_large", f"the request body is over the limit of "
                                                    f"{settings.max_upload_bytes:,} bytes"), status_code=413)
            request._body = bytes(body)   # starlette serves a read body to the handler from here
        return await call_next(request)

    # -- the page and health -------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(resources.files("cosface.serve").joinpath("static/index.html").read_text("utf-8"))

    @app.get("/healthz", tags=["service"])
    async def healthz():
        doc = {"status": "ok", "version": __version__, "model": service.model_doc(),
               "threshold": service.threshold, "auth": settings.api_key is not None}
        if service.gallery is not None:
            s, f = await run_in_threadpool(service.gallery.store.counts)
            doc["gallery"] = {"subjects": s, "faces": f}
        return doc

    # -- faces -----------------------------------------------------------------------------------------------
    @app.post("/v1/detect", tags=["faces"], openapi_extra=_body({"image": "image"}, ("image",)),
              summary="Every face in a photo: boxes, detector scores, five landmarks and aligned crops")
    async def detect(request: Request):
        inputs = await read_inputs(request, ("image",), settings.max_images)
        crops = await service.crops(inputs.image("image"), "image", keep="all")
        return {"faces": [_crop_doc(c) for c in crops]}

    @app.post("/v1/embed", tags=["faces"], openapi_extra=_body({"image": "images"}, ("image",)),
              summary="Embeddings of the largest face of each image")
    async def embed(request: Request):
        inputs = await read_inputs(request, ("image",), settings.max_images)
        images = inputs.images("image")
        if not images:
            inputs.image("image")   # raises the missing-image error
        crops = [(await service.crops(data, f"image #{i + 1}"))[0] for i, (_, data) in enumerate(images)]
        emb = await service.embed([c.image for c in crops])
        return {"model": service.model_doc(),
                "faces": [{**_crop_doc(c, with_image=False), "embedding": e.tolist()} for c, e in zip(crops, emb)]}

    @app.post("/v1/verify", tags=["faces"], openapi_extra=_body({"image1": "image", "image2": "image",
                                                                 "threshold": "number"}, ("image1", "image2")),
              summary="Are the faces in two images the same person?")
    async def verify(request: Request):
        inputs = await read_inputs(request, ("image1", "image2"), settings.max_images)
        a, b = inputs.image("image1"), inputs.image("image2")
        ca, cb = (await service.crops(a, "image1"))[0], (await service.crops(b, "image2"))[0]
        ea, eb = await service.embed([ca.image, cb.image])
        t, source = _threshold(inputs, service)
        sim = float(np.dot(ea, eb))
        return {"similarity": sim, "threshold": t, "threshold_source": source, "same": sim > t,
                "faces": [_crop_doc(ca), _crop_doc(cb)]}

    @app.post("/v1/identify", tags=["gallery"],
              openapi_extra=_body({"image": "image", "top_k": "integer", "threshold": "number",
                                   "embedding": "array", "model_sha256": "string"}, ()),
              summary="Who is this? The best-matching subjects of the gallery")
    async def identify(request: Request):
        gallery = service.need_gallery()
        inputs = await read_inputs(request, ("image",), settings.max_images)
        top_k = inputs.integer("top_k", 5, 1, 100)
        face = None
        if "embedding" in inputs.fields:
            query = _client_embedding(inputs, service)
        else:
            face = (await service.crops(inputs.image("image"), "image"))[0]
            query = await service.embed([face.image])
        threshold, source = _threshold(inputs, service)
        result = (await run_in_threadpool(gallery.identify, query, top_k=top_k, threshold=threshold))[0]
        doc = {"identity": result.name, "known": result.known, "threshold": result.threshold,
               "threshold_source": source, "scoring": gallery.scoring,
               "matches": [{"name": m.name, "score": m.score, "thumbnail": f"/v1/subjects/{_q(m.name)}/thumbnail"}
                           for m in result.matches]}
        if face is not None:
            doc["face"] = _crop_doc(face)
        return doc

    # -- subjects -------------------------------------------------------------------------------------------
    @app.get("/v1/subjects", tags=["gallery"], summary="Subjects and their face counts, a page at a time, by name",
             description="`next` is the `after` of the following page (null on the last); `total` counts every "
             "subject that matches `prefix`. Pages are keyed on names, so enrolments and deletions between two "
             "requests never make a page skip or repeat a subject.")
    async def list_subjects(
            limit: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE, description=f"subjects per page, 1..{MAX_PAGE}"),
            after: str | None = Query(None, max_length=1000,
                                      description="list the names after this one: the previous page's `next`"),
            prefix: str | None = Query(None, max_length=200,
                                       description="only names that start with this (case-sensitive)")):
        page = await run_in_threadpool(service.need_gallery().page, limit=limit, after=after, prefix=prefix)
        return {"subjects": [_subject_doc(s) for s in page.subjects], "next": page.next, "total": page.total}

    async def _enroll_faces(inputs: Inputs) -> tuple[np.ndarray, list[bytes], list[str]]:
        images = inputs.images("image", "images")
        if not images:
            inputs.image("image")
        crops = [(await service.crops(data, f"image #{i + 1}"))[0] for i, (_, data) in enumerate(images)]
        emb = await service.embed([c.image for c in crops])
        return emb, [thumbnail_jpeg(c.image) for c in crops], [f"upload #{i + 1}" for i in range(len(crops))]

    @app.post("/v1/subjects", tags=["gallery"], status_code=201,
              openapi_extra=_body({"name": "string", "metadata": "object", "image": "images"}, ("name", "image")),
              summary="Enrol a new subject with one or more photos")
    async def create_subject(request: Request):
        gallery = service.need_gallery()
        inputs = await read_inputs(request, ("image", "images"), settings.max_images)
        name = inputs.text("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "bad_request", "'name' is required: the subject's name")
        metadata = inputs.json_object("metadata")
        emb, thumbs, sources = await _enroll_faces(inputs)

        def write():
            try:
                return gallery.enroll(name, emb, thumbnails=thumbs, sources=sources, metadata=metadata, exist_ok=False)
            except SubjectExistsError:
                raise ApiError(409, "subject_exists", f"a subject named {name.strip()!r} exists: add faces with "
                                                      f"POST /v1/subjects/{{name}}/faces") from None

        return JSONResponse({"subject": _subject_doc(await run_in_threadpool(write))}, status_code=201)

    def _subject(name: str):
        try:
            return service.need_gallery().subject(name)
        except CosfaceError as e:
            raise ApiError(404, "no_subject", str(e)) from None

    @app.get("/v1/subjects/{name}", tags=["gallery"], summary="One subject, with its face ids")
    async def get_subject(name: str):
        return {"subject": _subject_doc(await run_in_threadpool(_subject, name))}

    @app.patch("/v1/subjects/{name}", tags=["gallery"], summary="Rename a subject or replace its metadata",
               openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                   "type": "object", "properties": {"name": {"type": "string"}, "metadata": {"type": "object"}}}}}}})
    async def update_subject(name: str, request: Request):
        inputs = await read_inputs(request, (), settings.max_images)
        new_name = inputs.text("name")
        metadata = inputs.json_object("metadata")

        def write():
            _subject(name)
            try:
                return service.gallery.store.update(name, new_name=new_name, metadata=metadata)
            except SubjectExistsError:
                raise ApiError(409, "subject_exists", f"a subject named {new_name!r} exists") from None

        return {"subject": _subject_doc(await run_in_threadpool(write))}

    @app.delete("/v1/subjects/{name}", tags=["gallery"], summary="Delete a subject and its faces")
    async def delete_subject(name: str):
        def write():
            _subject(name)
            return service.gallery.remove(name)

        return {"removed": name, "faces": await run_in_threadpool(write)}

    @app.post("/v1/subjects/{name}/faces", tags=["gallery"], status_code=201,
              openapi_extra=_body({"image": "images"}, ("image",)), summary="Add photos to a subject")
    async def add_faces(name: str, request: Request):
        await run_in_threadpool(_subject, name)
        inputs = await read_inputs(request, ("image", "images"), settings.max_images)
        emb, thumbs, sources = await _enroll_faces(inputs)
        s = await run_in_threadpool(lambda: service.gallery.enroll(name, emb, thumbnails=thumbs, sources=sources,
                                                                   create=False))
        return JSONResponse({"subject": _subject_doc(s)}, status_code=201)

    @app.delete("/v1/subjects/{name}/faces/{face_id}", tags=["gallery"], summary="Delete one face of a subject")
    async def delete_face(name: str, face_id: int):
        def write():
            _subject(name)
            try:
                service.gallery.store.remove_face(name, face_id)
            except CosfaceError as e:
                raise ApiError(404, "no_face", str(e)) from None
            return service.gallery.subject(name)

        return {"subject": _subject_doc(await run_in_threadpool(write))}

    @app.get("/v1/subjects/{name}/faces/{face_id}/thumbnail", tags=["gallery"], response_class=Response,
             summary="The aligned crop enrolled as this face (JPEG)")
    async def face_thumbnail(name: str, face_id: int):
        def read():
            s = _subject(name)
            if face_id not in s.face_ids:
                raise ApiError(404, "no_face", f"subject {name!r} has no face {face_id}")
            return service.gallery.store.thumbnail(face_id)

        data = await run_in_threadpool(read)
        if data is None:
            raise ApiError(404, "no_thumbnail", f"face {face_id} was enrolled without a thumbnail")
        return Response(data, media_type="image/jpeg")

    @app.get("/v1/subjects/{name}/thumbnail", tags=["gallery"], response_class=Response,
             summary="The subject's first enrolled face (JPEG)")
    async def subject_thumbnail(name: str):
        def read():
            s = _subject(name)
            for fid in s.face_ids:
                data = service.gallery.store.thumbnail(fid)
                if data is not None:
                    return data
            raise ApiError(404, "no_thumbnail", f"subject {name!r} has no enrolled thumbnail")

        return Response(await run_in_threadpool(read), media_type="image/jpeg")

    return app


def _threshold(inputs: Inputs, service: Service) -> tuple[float, str]:
    """The request's `threshold` when it gives one, else the model's verify threshold."""
    raw = inputs.fields.get("threshold")
    if raw is None or raw == "":
        return service.threshold, service.threshold_source
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):   # OverflowError: an integer beyond float's range
        raise ApiError(400, "bad_request", f"'threshold' must be a number, got {raw!r}") from None
    try:
        return check_cosine_threshold(value, "'threshold'"), "given"
    except CosfaceError as e:
        raise ApiError(400, "bad_request", str(e)) from None


def _local_or_ip(host: str) -> bool:
    """Whether a Host header names localhost or an IP address (never a DNS name another site controls)."""
    import ipaddress
    from urllib.parse import urlsplit

    try:
        name = urlsplit("//" + host).hostname
        if name == "localhost":
            return True
        ipaddress.ip_address(name or "")
        return True
    except ValueError:
        return False


def _q(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _client_embedding(inputs: Inputs, service: Service) -> np.ndarray:
    """An embedding the client computed: it must come from this server's model (same sha256 and size)."""
    declared = inputs.fields.get("model_sha256")
    if declared is None:
        raise ApiError(400, "bad_request", "an 'embedding' needs 'model_sha256': the sha256 of the model that made it "
                                           "(GET /healthz or POST /v1/embed gives this server's)")
    if declared != service.identity.model_sha256:
        raise ApiError(409, "model_mismatch", f"the embedding comes from model sha256 {str(declared)[:12]}..., this "
                                              f"gallery holds model {service.identity.model_sha256[:12]}...; "
                                              f"embeddings of different models cannot be compared")
    try:
        q = np.asarray(inputs.fields["embedding"], dtype=np.float32).reshape(1, -1)
    except (TypeError, ValueError, OverflowError):   # OverflowError: an integer beyond float's range
        raise ApiError(400, "bad_request", "'embedding' must be a list of numbers") from None
    if q.shape[1] == service.identity.dim and not np.isfinite(q).all():
        raise ApiError(400, "bad_request", "'embedding' holds NaN or infinity")
    if q.shape[1] != service.identity.dim:
        raise ApiError(409, "model_mismatch", f"the embedding has {q.shape[1]} values; this model's have "
                                              f"{service.identity.dim}")
    return q / max(float(np.linalg.norm(q)), 1e-12)
