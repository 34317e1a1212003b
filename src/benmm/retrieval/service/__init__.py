"""The retrieval web service: the FastAPI app (:mod:`.app`), untrusted upload parsing (:mod:`.upload`)
and the page (``static/``)."""
