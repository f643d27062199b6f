"""Enrolled subjects and 1:N search: an SQLite store, an exact or FAISS index, photos to embeddings.

    from cosface import Embedder
    from cosface.gallery import Gallery, ModelIdentity, photo_faces
    emb = Embedder("model.onnx")
    g = Gallery("people.sqlite", ModelIdentity.of(emb))
    faces = photo_faces(emb, ["ada_1.jpg", "ada_2.jpg"])
    g.enroll("Ada", faces.embeddings, sources=faces.sources)
    [result] = g.identify(photo_faces(emb, ["who.jpg"]).embeddings, top_k=5,
                          threshold=emb.default_threshold()[0])
    result.name, result.matches      # "Ada" (or None: unknown), [Match(name, score), ...]
    page = g.page(limit=100, prefix="A")   # .subjects, .next (pass as after=), .total
"""
from cosface.gallery.enroll import EnrollReport, enroll_folder, enroll_photos, open_gallery
from cosface.gallery.gallery import FAISS_MIN, INDEXES, SCORINGS, Gallery, Identification, Match
from cosface.gallery.photos import (MAX_PIXELS, Crop, NoFaceError, NotAnImageError, PhotoFaces, TooManyPixelsError,
                                    decode_photo, embed_crops, face_crops, photo_faces, read_photo, thumbnail_jpeg)
from cosface.gallery.store import (PAGE_SIZE, SCHEMA_VERSION, GalleryBusyError, GalleryStore, ModelIdentity, Subject,
                                   SubjectExistsError, SubjectPage)

__all__ = [
    "FAISS_MIN", "INDEXES", "MAX_PIXELS", "PAGE_SIZE", "SCHEMA_VERSION", "SCORINGS", "Crop", "EnrollReport", "Gallery",
    "GalleryBusyError", "GalleryStore", "Identification", "Match", "ModelIdentity", "NoFaceError", "NotAnImageError", "PhotoFaces",
    "Subject", "SubjectExistsError", "SubjectPage", "TooManyPixelsError",
    "decode_photo", "embed_crops", "enroll_folder", "enroll_photos", "face_crops", "open_gallery", "photo_faces",
    "read_photo", "thumbnail_jpeg",
]
