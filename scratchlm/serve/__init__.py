"""``scratchlm serve``: an OpenAI-compatible HTTP server with task endpoints and a web page (FastAPI + uvicorn).

    scratchlm serve --model runs/quickstart/model --model sentiment=runs/quickstart/sentiment/decoder/model

See docs/serving.md. ``server`` loads the models and runs uvicorn; ``app`` builds the FastAPI application
from ``openai_routes`` and ``task_routes``; ``batching`` runs each model's requests in batches on its own
thread. The verb's parser is ``scratchlm.cli.serve``, which imports FastAPI and torch only when it runs.
"""
