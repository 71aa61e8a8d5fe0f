"""Every route of the HTTP API, one handler per file: the table the server registers, and
docs/security.md's entry-point table names (tests/test_http_api.py checks they agree)."""
from __future__ import annotations

from adapters.http_api.chat import chat_completions
from adapters.http_api.embeddings import embeddings
from adapters.http_api.files import delete_file, list_files, upload_file
from adapters.http_api.health import healthz
from adapters.http_api.models import list_models

# (method, path, handler): reached only with a valid key (the server's authentication)
ROUTES = (
    ("POST", "/v1/chat/completions", chat_completions),
    ("GET", "/v1/models", list_models),
    ("POST", "/v1/embeddings", embeddings),
    ("POST", "/v1/files", upload_file),
    ("GET", "/v1/files", list_files),
    ("DELETE", "/v1/files/{file_id}", delete_file),
)
# reached without a key: whether the process is up
OPEN_ROUTES = (
    ("GET", "/healthz", healthz),
)
