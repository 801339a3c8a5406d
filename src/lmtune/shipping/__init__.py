"""Putting a fine-tuned model to use: export (merged HF folder, GGUF, int8), chat, serve.

* ``export``   — ``lmtune export RUN --output DIR``: merge, write, then check the written model
  against the run's own model before reporting success (``export.json``);
* ``gguf``     — a GGUF file written in-process with the ``gguf`` package's ``GGUFWriter``;
* ``quantize`` — int8 weight-only copies through torchao (``TorchAoConfig``);
* ``chat``     — a streaming terminal chat;
* ``serve``    — an OpenAI-compatible HTTP server (FastAPI, ``model.generate``) that honours or refuses
  each request field.
"""
