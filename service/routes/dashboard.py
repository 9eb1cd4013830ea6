"""`/dashboard/`: pages for people (`service/dashboard/`), drawn in the browser from the `/v1` API alone.

They are served without a key (`KeyCheck` guards `/v1/` only): the page asks for one when the API answers
401 and sends it in the `Authorization` header of each call, never in a URL. A browser's visit to any path
below `/dashboard/` that names no file (`/dashboard/jobs/job-…`) gets `index.html`, which reads the path.
"""

from pathlib import Path

from fastapi import APIRouter

PAGES = Path(__file__).resolve().parent.parent / "dashboard"
PATH = "/dashboard"

router = APIRouter()
router.frontend(PATH, directory=PAGES, fallback="index.html")
